"""Replicas on one database: who is live, and which of them serves each tenant.

Each replica renews a lease row (`replicas`) every `heartbeat_seconds`; the live
set is the rows whose lease has not lapsed (the database's clock). A tenant goes to
the live replicas in rendezvous-hash order: the first is its owner, the second its
standby. Every replica computes the same order from the same set, with no
coordination, and a change of the set moves only the tenants of the replica that
came or went. This works the same on Kubernetes and on one laptop: the database is
the only thing replicas share.

With no `advertise_address` the process is alone: every tenant is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.common.kit import Blocking
from services.common.leases import replica_identity
from services.retrieval.settings import RetrievalSettings
from services.retrieval.store import RetrievalStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    id: str
    address: str


def rendezvous(tenant: str, members: list[Member]) -> list[Member]:
    """`members` ranked for `tenant`, highest random weight first."""

    def weight(member: Member) -> bytes:
        return hashlib.blake2b(f"{member.id}\0{tenant}".encode(), digest_size=8).digest()

    return sorted(members, key=weight, reverse=True)


class Membership:
    """This replica's lease and its view of the live set."""

    def __init__(
        self,
        settings: RetrievalSettings,
        store: RetrievalStore,
        blocking: Blocking,
        on_tick: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.blocking = blocking
        self.on_tick = on_tick
        self.enabled = bool(settings.advertise_address)
        self.me = Member(
            replica_identity(settings.replica_id, settings.port), settings.advertise_address
        )
        self.members: list[Member] = [self.me]
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Joins (one heartbeat) and keeps renewing in the background."""
        if not self.enabled:
            return
        await self._beat()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Leaves at once, so the survivors take this replica's tenants without waiting
        for its lease to lapse."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.enabled:
            try:
                await self.blocking(self.store.leave, self.me.id)
            except Exception:
                log.exception("could not leave the membership table; the lease will lapse")

    def plan(self, tenant: str) -> list[Member]:
        """The live replicas in the order they should serve `tenant`."""
        return rendezvous(tenant, self.members)

    def keeps(self, tenant: str) -> bool:
        """Whether this replica is `tenant`'s owner or standby."""
        return self.me in self.plan(tenant)[:2]

    def ahead_of_me(self, tenant: str) -> list[Member]:
        """The replicas ranked above this one for `tenant` (empty: this one owns it)."""
        if not self.enabled:
            return []
        plan = self.plan(tenant)
        return plan[: plan.index(self.me)] if self.me in plan else plan

    async def _beat(self) -> None:
        rows = await self.blocking(
            self.store.heartbeat, self.me.id, self.me.address, self.settings.lease_seconds
        )
        members = [Member(i, a) for i, a in rows]
        if self.me not in members:
            members.append(self.me)
        if members != self.members:
            log.info("replicas: %s", ", ".join(f"{m.id}@{m.address}" for m in members))
        self.members = members

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self._beat()
                if self.on_tick is not None:
                    await self.on_tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("membership heartbeat failed; retrying")
