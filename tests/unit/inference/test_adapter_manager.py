"""AdapterManager over a fake engine and a real registry: caching, expiry, eviction, loads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from services.common.adapter_ref import AdapterName, parse_ref
from services.common.errors import DataLoss, FailedPrecondition, NotFound
from services.inference.records import AdapterVersionInfo


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_plain_reference_hits_the_alias_cache(rig):
    """Defect 1: `acme/bot` (no @) asked the registry on every request."""
    await rig.push("acme", "acme/bot")
    manager = rig.manager(resolve_ttl_seconds=60)
    first = await manager.resolve("acme", parse_ref("acme/bot"))
    second = await manager.resolve("acme", parse_ref("acme/bot"))
    assert first.ref == second.ref == "acme/bot@1"
    assert rig.counting.fetches == ["acme/bot"] and rig.counting.resolves == []


async def test_alias_resolution_expires(rig):
    await rig.push("acme", "acme/bot", aliases=["prod"])
    clock = Clock()
    manager = rig.manager(resolve_ttl_seconds=5, clock=clock)
    await manager.resolve("acme", parse_ref("acme/bot@prod"))
    await manager.resolve("acme", parse_ref("acme/bot@prod"))
    assert rig.counting.fetches == ["acme/bot@prod"] and rig.counting.resolves == []
    clock.now += 6
    await manager.resolve("acme", parse_ref("acme/bot@prod"))
    assert rig.counting.resolves == ["acme/bot@prod"], "warm: a resolve, no bytes"
    # an exact version never needs the registry once loaded
    await manager.resolve("acme", parse_ref("acme/bot@1"))
    assert len(rig.counting.resolves + rig.counting.fetches) == 2


async def test_cold_reference_is_resolved_once_and_that_version_downloaded(rig):
    """A cold load is one registry call: DownloadAdapter resolves, checks and streams, and
    its header names the version the bytes are of."""
    await rig.push("acme", "acme/bot")
    manager = rig.manager()
    resolved = await manager.resolve("acme", parse_ref("acme/bot"))
    assert rig.counting.fetches == ["acme/bot"]
    assert rig.counting.resolves == [] and rig.counting.downloads == []
    assert resolved.version.digest and resolved.version.version == 1
    assert rig.engine.load_calls == ["acme/bot@1"]
    # a newer version of a name held here: resolved (no bytes), then that version fetched
    await rig.push("acme", "acme/bot", seed=1)
    fresh = rig.manager()  # fresh alias cache, same disk cache
    await fresh.resolve("acme", parse_ref("acme/bot@1"))
    assert (await fresh.resolve("acme", parse_ref("acme/bot"))).version.version == 2
    assert rig.counting.resolves == ["acme/bot"] and rig.counting.downloads == ["acme/bot@2"]


async def test_cold_load_reuses_the_disk_cache_and_checks_the_engine(rig):
    await rig.push("acme", "acme/bot")
    await rig.manager().resolve("acme", parse_ref("acme/bot"))
    restarted = rig.manager()  # a new process over the same disk cache
    assert (await restarted.resolve("acme", parse_ref("acme/bot"))).version.version == 1
    assert rig.counting.fetches == ["acme/bot"] * 2, "the second stopped after the header"
    assert not list((rig.tmp / "cache" / "tmp").iterdir()), "no staging folder left behind"
    await rig.push("acme", "acme/other")
    rig.engine.lora_modules = ("k_proj",)  # the adapter targets q_proj and v_proj
    with pytest.raises(FailedPrecondition, match="v_proj"):
        await restarted.resolve("acme", parse_ref("acme/other"))
    assert restarted.loaded("acme") == ["acme/bot@1"]


async def test_download_refuses_content_other_than_resolved(rig, tmp_path):
    await rig.push("acme", "acme/bot")
    wrong = AdapterVersionInfo(AdapterName("acme", "bot"), 1, "0" * 64)
    (tmp_path / "dl").mkdir()
    with pytest.raises(DataLoss, match="another content"):
        await rig.gateway.download("acme", wrong, tmp_path / "dl")


async def test_concurrent_first_requests_load_once(rig):
    await rig.push("acme", "acme/bot")
    manager = rig.manager()
    results = await asyncio.gather(
        *(manager.resolve("acme", parse_ref("acme/bot@1")) for _ in range(5))
    )
    assert {r.handle.lora_id for r in results} == {results[0].handle.lora_id}
    assert rig.engine.load_calls == ["acme/bot@1"]
    assert not manager._loading  # nothing left behind once loaded


async def test_loaded_adapters_are_bounded(rig):
    """Defect 8: bookkeeping grew without bound while the disk cache had room."""
    for version in range(3):
        await rig.push("acme", "acme/bot", seed=version)
    manager = rig.manager(max_loaded=2)
    for version in (1, 2, 3):
        await manager.resolve("acme", parse_ref(f"acme/bot@{version}"))
    assert manager.loaded("acme") == ["acme/bot@2", "acme/bot@3"]
    assert sorted(h.name for h in rig.engine.loaded.values()) == ["acme/bot@2", "acme/bot@3"]
    # used again, v2 is the most recent: loading v1 again evicts v3
    await manager.resolve("acme", parse_ref("acme/bot@2"))
    await manager.resolve("acme", parse_ref("acme/bot@1"))
    assert manager.loaded("acme") == ["acme/bot@1", "acme/bot@2"]


async def test_foreign_and_refused_adapters(rig):
    await rig.push("globex", "globex/secret")
    manager = rig.manager()
    with pytest.raises(NotFound):
        await manager.resolve("acme", parse_ref("globex/secret"))
    assert rig.counting.resolves == []  # refused before any registry call
    await rig.push("acme", "acme/broken")
    rig.engine.refuse.add("acme/broken")
    with pytest.raises(FailedPrecondition):
        await manager.resolve("acme", parse_ref("acme/broken"))
    assert manager.loaded("acme") == []


async def test_disk_work_runs_off_the_event_loop(rig, monkeypatch):
    """Defect 4: the cache's folder walks and deletes ran on the loop."""
    import services.inference.adapter_cache as cache_module

    threads: list[str] = []
    place, remove = cache_module._place, cache_module._remove

    def placing(*args):
        threads.append(threading.current_thread().name)
        return place(*args)

    def removing(*args):
        threads.append(threading.current_thread().name)
        return remove(*args)

    monkeypatch.setattr(cache_module, "_place", placing)
    monkeypatch.setattr(cache_module, "_remove", removing)
    for version in range(2):
        await rig.push("acme", "acme/bot", seed=version)
    manager = rig.manager(cache_bytes=1, max_loaded=1)
    await manager.resolve("acme", parse_ref("acme/bot@1"))
    await manager.resolve("acme", parse_ref("acme/bot@2"))
    assert len(threads) >= 3  # two placements, at least one eviction
    assert threading.main_thread().name not in threads
