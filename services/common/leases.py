"""Rows claimed under a lease: one owner at a time, kept by heartbeats, fenced by an epoch.

A table that hands out work (training jobs) carries three columns: the owner (a
replica's identity), the lease's expiry, and an epoch that grows by one with every
claim. A claim takes rows that match the caller's condition and whose lease is free
(never taken, released, or expired):

- on PostgreSQL with `SELECT … FOR UPDATE SKIP LOCKED`, so replicas claiming at once
  take different rows instead of queueing on the same one;
- on SQLite inside one writer's transaction (`BEGIN IMMEDIATE`).

Every update also compares the epoch it read (compare-and-set), so two claimers can
never both win a row whatever the isolation level. The epoch is the fencing token:
an owner writes with `held(lease)` in its WHERE clause, so a stale owner (paused past
its expiry, partitioned, or replaced) has its writes refused instead of applied.

Expiry is read from the database's clock on PostgreSQL (replicas on several hosts
need not agree on the time) and from the local clock on SQLite (one host).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, replace

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    or_,
    select,
    text,
    update,
)


def replica_identity(configured: str = "", port: int = 0) -> str:
    """Who owns a lease: the configured id, else host and port (stable across restarts of
    one replica, distinct between replicas on one host), else host and pid."""
    if configured:
        return configured
    host = socket.gethostname()
    return f"{host}:{port}" if port else f"{host}-{os.getpid()}"


class LeaseLost(Exception):
    """A fenced write found the lease taken over: the writer is no longer the owner."""


@dataclass(frozen=True)
class Lease:
    """A held claim on one row: its key, its owner, its fencing epoch and when it lapses."""

    key: str
    owner: str
    epoch: int
    expires_at: float


def now(conn: Connection) -> float:
    """Seconds since the epoch on the clock every replica shares."""
    if conn.dialect.name == "postgresql":
        return float(conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar())
    return time.time()


class LeaseTable:
    """Claims, renews and releases leases on the rows of `table`.

    Methods take a connection inside a transaction the caller owns (for SQLite, one
    from `services.common.db.write_transaction`), so a claim and the caller's own
    writes about it (say, a job's state) commit together.
    """

    def __init__(
        self,
        table: Table,
        *,
        key: str = "id",
        owner: str = "owner",
        epoch: str = "lease_epoch",
        expires: str = "lease_expires_at",
    ) -> None:
        self.table = table
        self.key = table.c[key]
        self.owner = table.c[owner]
        self.epoch = table.c[epoch]
        self.expires = table.c[expires]

    def free(self, moment: float) -> ColumnElement[bool]:
        """Rows nobody holds at `moment`: never claimed, released, or expired."""
        return or_(self.expires.is_(None), self.expires <= moment)

    def held(self, lease: Lease) -> ColumnElement[bool]:
        """The fence: add to every owner's UPDATE so a lost lease writes nothing."""
        return and_(self.key == lease.key, self.owner == lease.owner, self.epoch == lease.epoch)

    def claim(
        self,
        conn: Connection,
        owner: str,
        seconds: float,
        where: ColumnElement[bool] | None = None,
        order_by: tuple = (),
        limit: int = 1,
        **values: object,
    ) -> list[Lease]:
        """Up to `limit` free rows matching `where`, in `order_by` order, now `owner`'s.

        `values` are set on each claimed row in the same statement (e.g. a state).
        """
        if limit <= 0:
            return []
        moment = now(conn)
        condition = self.free(moment) if where is None else and_(where, self.free(moment))
        query = (
            select(self.key, self.epoch)
            .where(condition)
            .order_by(*order_by)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        won = []
        for key, epoch in conn.execute(query).all():
            lease = self._take(conn, key, epoch, owner, moment + seconds, condition, values)
            if lease is not None:
                won.append(lease)
        return won

    def claim_key(
        self,
        conn: Connection,
        key: str,
        owner: str,
        seconds: float,
        where: ColumnElement[bool] | None = None,
        *,
        own: bool = False,
        **values: object,
    ) -> Lease | None:
        """Claims the row `key` if it is free (or, with `own`, already `owner`'s: a restarted
        replica taking its own rows back before their leases expire); None otherwise."""
        moment = now(conn)
        free = self.free(moment)
        if own:
            free = or_(free, self.owner == owner)
        condition = free if where is None else and_(where, free)
        row = conn.execute(
            select(self.epoch).where(self.key == key, condition).with_for_update()
        ).first()
        if row is None:
            return None
        return self._take(conn, key, row[0], owner, moment + seconds, condition, values)

    def _take(
        self,
        conn: Connection,
        key: str,
        epoch: int,
        owner: str,
        expires_at: float,
        condition: ColumnElement[bool],
        values: dict[str, object],
    ) -> Lease | None:
        result = conn.execute(
            update(self.table)
            .where(self.key == key, self.epoch == epoch, condition)
            .values({self.owner: owner, self.epoch: epoch + 1, self.expires: expires_at})
            .values(values)
        )
        if result.rowcount != 1:
            return None  # another claimer's compare-and-set won
        return Lease(key, owner, epoch + 1, expires_at)

    def renew(self, conn: Connection, lease: Lease, seconds: float) -> Lease | None:
        """The heartbeat: pushes the expiry on while the lease is still this owner's epoch.

        An expired lease nobody took yet is renewed too: the epoch, not the clock,
        says whether another owner came in between.
        """
        expires_at = now(conn) + seconds
        result = conn.execute(
            update(self.table).where(self.held(lease)).values({self.expires: expires_at})
        )
        return replace(lease, expires_at=expires_at) if result.rowcount == 1 else None

    def release(self, conn: Connection, lease: Lease, **values: object) -> bool:
        """Frees the row for the next claimer at once (e.g. on a clean shutdown)."""
        result = conn.execute(
            update(self.table)
            .where(self.held(lease))
            .values({self.owner: "", self.expires: None})
            .values(values)
        )
        return result.rowcount == 1

    def is_held(self, conn: Connection, lease: Lease) -> bool:
        """Whether `lease` is still the row's current one (its epoch has not moved on)."""
        return conn.execute(select(self.key).where(self.held(lease))).first() is not None
