"""Scenarios of the kit's lease helper, run on SQLite (unit) and PostgreSQL (integration)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, select, update

from services.common.db import write_transaction
from services.common.leases import LeaseTable

metadata = MetaData()
tasks = Table(
    "tasks",
    metadata,
    Column("id", String(20), primary_key=True),
    Column("state", String(10), nullable=False),
    Column("owner", String(64), nullable=False, server_default=""),
    Column("lease_epoch", Integer, nullable=False, server_default="0"),
    Column("lease_expires_at", Float, nullable=True),
    Column("result", String(20), nullable=False, server_default=""),
)
leases = LeaseTable(tasks)
QUEUED = tasks.c.state == "queued"


def setup(engine: Engine, count: int) -> None:
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(tasks.insert(), [{"id": f"t{i}", "state": "queued"} for i in range(count)])


def claim(engine: Engine, owner: str, seconds: float = 30, limit: int = 1):
    with write_transaction(engine) as conn:
        return leases.claim(
            conn, owner, seconds, QUEUED, order_by=(tasks.c.id,), limit=limit, state="running"
        )


def racing_claimers_each_row_once(engines: list[Engine]) -> None:
    """Many claimers at once, one row each per call: every row is won exactly once."""
    setup(engines[0], 6)
    barrier = threading.Barrier(len(engines))
    won: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def claimer(engine: Engine, name: str) -> None:
        barrier.wait()
        try:
            while True:
                got = claim(engine, name)
                if not got:
                    return
                won.extend((lease.key, name) for lease in got)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [
        threading.Thread(target=claimer, args=(e, f"replica-{i}")) for i, e in enumerate(engines)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(key for key, _ in won) == [f"t{i}" for i in range(6)]
    with engines[0].connect() as conn:
        rows = conn.execute(select(tasks.c.id, tasks.c.owner, tasks.c.lease_epoch)).all()
    assert {(r.id, r.owner) for r in rows} == set(won)
    assert {r.lease_epoch for r in rows} == {1}


def one_row_two_claimers_one_wins(engines: list[Engine]) -> None:
    setup(engines[0], 1)
    barrier = threading.Barrier(2)
    results: dict[str, list] = {}

    def claimer(engine: Engine, name: str) -> None:
        barrier.wait()
        results[name] = claim(engine, name)

    threads = [threading.Thread(target=claimer, args=(e, f"r{i}")) for i, e in enumerate(engines)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(v) for v in results.values()) == [0, 1]


def expired_lease_is_reclaimed_and_the_stale_owner_fenced(engine: Engine) -> None:
    setup(engine, 1)
    (first,) = claim(engine, "a", seconds=0.3)
    assert claim(engine, "b") == []  # held: not claimable by state nor by lease
    running = tasks.c.state == "running"
    with write_transaction(engine) as conn:
        assert leases.claim_key(conn, "t0", "b", 30, running) is None  # not expired yet
    time.sleep(0.4)
    with write_transaction(engine) as conn:
        second = leases.claim_key(conn, "t0", "b", 30, running)
    assert second is not None and second.owner == "b" and second.epoch == first.epoch + 1
    with write_transaction(engine) as conn:
        # the stale owner's heartbeat and writes are refused; the new owner's go through
        assert leases.renew(conn, first, 30) is None
        assert not leases.is_held(conn, first)
        stale = conn.execute(update(tasks).where(leases.held(first)).values(result="stale"))
        fresh = conn.execute(update(tasks).where(leases.held(second)).values(result="fresh"))
        assert (stale.rowcount, fresh.rowcount) == (0, 1)
    with engine.connect() as conn:
        assert conn.execute(select(tasks.c.result)).scalar() == "fresh"


def heartbeat_keeps_the_lease(engine: Engine) -> None:
    setup(engine, 1)
    (lease,) = claim(engine, "a", seconds=0.3)
    running = tasks.c.state == "running"
    for _ in range(4):
        time.sleep(0.15)
        with write_transaction(engine) as conn:
            lease = leases.renew(conn, lease, 0.3)
        assert lease is not None
        with write_transaction(engine) as conn:
            assert leases.claim_key(conn, "t0", "b", 30, running) is None
    with write_transaction(engine) as conn:
        assert leases.release(conn, lease, state="queued")
    (again,) = claim(engine, "b")  # released: claimable at once, under a new epoch
    assert again.epoch == lease.epoch + 1


def own_rows_are_taken_back_before_expiry(engine: Engine) -> None:
    setup(engine, 1)
    (lease,) = claim(engine, "a", seconds=30)
    running = tasks.c.state == "running"
    with write_transaction(engine) as conn:
        assert leases.claim_key(conn, "t0", "b", 30, running, own=True) is None
        back = leases.claim_key(conn, "t0", "a", 30, running, own=True)
    assert back is not None and back.epoch == lease.epoch + 1
