"""Rendezvous placement over replicas, and the loaded-collection cache's memory budget."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

from services.retrieval.cache import CollectionCache
from services.retrieval.index import IndexParams, VectorIndex
from services.retrieval.live import LiveCollection
from services.retrieval.membership import Member, rendezvous
from services.retrieval.records import CollectionRecord, IndexKind

TENANTS = [f"tenant-{i}" for i in range(600)]


def test_rendezvous_spreads_tenants_and_moves_only_those_of_the_changed_replica():
    three = [Member(f"r{i}", f"10.0.0.{i}:50052") for i in range(3)]
    before = {t: rendezvous(t, three) for t in TENANTS}
    spread = Counter(plan[0].id for plan in before.values())
    assert all(150 <= n <= 250 for n in spread.values()), spread
    assert all(plan[0] != plan[1] for plan in before.values())  # a standby apart from the owner
    # Order of the member list does not matter: every replica computes the same plan.
    assert all(rendezvous(t, three[::-1]) == before[t] for t in TENANTS[:50])

    survivors = three[1:]  # r0 dies: only its tenants move, each to its standby
    for tenant, plan in before.items():
        owner = rendezvous(tenant, survivors)[0]
        assert owner == (plan[1] if plan[0].id == "r0" else plan[0])

    joined = [*three, Member("r3", "10.0.0.3:50052")]  # r3 joins: it takes a share, no more
    moved = [t for t in TENANTS if rendezvous(t, joined)[0] != before[t][0]]
    assert all(rendezvous(t, joined)[0].id == "r3" for t in moved)
    assert 100 <= len(moved) <= 200


def _live(name: str, n: int) -> LiveCollection:
    record = CollectionRecord(
        len(name), "acme", name, "m", 8, IndexKind.EXACT, 32, 4, datetime.now(UTC), 1
    )
    vectors = np.eye(n, 8, dtype=np.float32)
    index = VectorIndex.build(IndexKind.EXACT, 8, IndexParams(), np.arange(n), vectors, 1)
    return LiveCollection(record, index)


async def test_cache_loads_once_and_unloads_least_recently_used_past_the_budget():
    one = _live("a", 100).memory_bytes()
    cache = CollectionCache(budget_bytes=int(2.5 * one))
    loads = Counter()

    async def load(name: str) -> LiveCollection:
        loads[name] += 1
        await asyncio.sleep(0.01)
        return _live(name, 100)

    # Concurrent first uses share one load.
    first = await asyncio.gather(
        *(cache.get_or_load(("acme", "a"), lambda: load("a")) for _ in range(5))
    )
    assert loads["a"] == 1 and all(live is first[0] for live in first)
    await cache.get_or_load(("acme", "b"), lambda: load("b"))
    assert cache.over_budget() == []
    cache.get(("acme", "a"))  # a is now more recent than b
    await cache.get_or_load(("acme", "c"), lambda: load("c"))
    assert [live.record.name for live in cache.over_budget()] == ["b"]
    assert cache.get(("acme", "b")) is None and len(cache) == 2
    assert cache.used_bytes() <= cache.budget_bytes

    async def broken() -> LiveCollection:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError):
        await cache.get_or_load(("acme", "d"), broken)
    assert cache.get(("acme", "d")) is None  # a failed load leaves nothing behind
    await cache.get_or_load(("acme", "d"), lambda: load("d"))
    assert loads["d"] == 1
