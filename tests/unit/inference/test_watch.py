"""The alias watch: one stream per replica, alias flips pre-load, pushes make `latest` stale;
and the registry side: one poller per process, per-tenant sequences, tenancy."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from sqlalchemy import event

from loraplex.registry.v1 import registry_service_pb2 as reg_pb
from services.common.adapter_ref import parse_ref
from services.common.context import request_id_var
from services.common.testing import service_metadata, tenant_metadata
from services.inference.alias_watch import TenantWatch


async def until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def watched(rig, manager) -> TenantWatch:
    watch = TenantWatch(rig.counting, manager.on_event, manager.forget_aliases, max_backoff=1)
    manager.on_tenant = lambda tenant: watch.follow((tenant,))
    return watch


async def test_one_stream_for_every_tenant_served(rig):
    """Defect 6: each tenant used to open its own stream on every replica."""
    manager = rig.manager()
    watch = watched(rig, manager)
    await rig.push("acme", "acme/bot")
    await rig.push("globex", "globex/bot")
    await manager.resolve("acme", parse_ref("acme/bot"))
    await manager.resolve("globex", parse_ref("globex/bot"))
    hub = rig.app.registry.hub
    await until(
        lambda: hub._subscriptions and {"acme", "globex"} <= next(iter(hub._subscriptions)).tenants
    )
    assert len(hub._subscriptions) == 1
    await watch.close()


async def test_push_makes_latest_stale_and_alias_flip_preloads(rig):
    await rig.push("acme", "acme/bot", aliases=["prod"])
    manager = rig.manager(resolve_ttl_seconds=3600)
    watch = watched(rig, manager)
    assert (await manager.resolve("acme", parse_ref("acme/bot"))).ref == "acme/bot@1"
    await until(lambda: watch.connected.is_set())
    await rig.push("acme", "acme/bot", seed=1)  # VERSION_PUSHED: latest is v2 now
    await until(lambda: (manager._cached_alias(parse_ref("acme/bot").adapter, "latest")) is None)
    assert (await manager.resolve("acme", parse_ref("acme/bot"))).ref == "acme/bot@2"

    await rig.stub.SetAlias(
        reg_pb.SetAliasRequest(name="acme/bot", alias="prod", version=2),
        metadata=tenant_metadata("acme"),
    )
    await until(lambda: manager._cached_alias(parse_ref("acme/bot").adapter, "prod") == 2)
    asked = len(rig.counting.resolves)
    assert (await manager.resolve("acme", parse_ref("acme/bot@prod"))).ref == "acme/bot@2"
    assert len(rig.counting.resolves) == asked  # the watch told us; no registry round trip
    await watch.close()
    await manager.close()


async def test_staged_alias_preloads_but_keeps_old_version_until_effective(rig):
    await rig.push("acme", "acme/bot", aliases=["prod"])
    await rig.push("acme", "acme/bot", seed=1)
    manager = rig.manager(resolve_ttl_seconds=3600)
    watch = watched(rig, manager)
    watch.follow(["acme"])
    await until(lambda: watch.connected.is_set())
    await rig.stub.SetAlias(
        reg_pb.SetAliasRequest(name="acme/bot", alias="prod", version=2, stage_seconds=60),
        metadata=tenant_metadata("acme"),
    )
    await until(lambda: "acme/bot@2" in manager.loaded("acme"))  # pre-loaded
    assert (await manager.resolve("acme", parse_ref("acme/bot@prod"))).ref == "acme/bot@1"
    await watch.close()
    await manager.close()


async def test_watch_task_does_not_keep_the_starting_request_id(rig):
    seen: list[str] = []
    manager = rig.manager()

    async def on_event(event):
        seen.append(request_id_var.get())

    watch = TenantWatch(rig.counting, on_event, manager.forget_aliases)
    await rig.push("acme", "acme/bot", aliases=["prod"])
    token = request_id_var.set("request-that-started-it")
    try:
        watch.follow(["acme"])
    finally:
        request_id_var.reset(token)
    await until(lambda: seen)
    assert "request-that-started-it" not in seen
    await watch.close()


async def test_service_watch_carries_only_named_tenants(rig):
    await rig.push("globex", "globex/bot", aliases=["prod"])
    await rig.push("acme", "acme/bot", aliases=["prod"])
    service_only = service_metadata("inference", "acme")[:1]  # the key, acting for no tenant

    async def requests():
        yield reg_pb.WatchTenantAdaptersRequest(tenants=["acme"], include_current=True)
        await asyncio.sleep(3600)

    call = rig.stub.WatchTenantAdapters(requests(), metadata=service_only)
    first = await call.read()
    assert first.event.name == "acme/bot" and first.event.alias == "prod"
    await rig.push("globex", "globex/bot", seed=1)
    await rig.push("acme", "acme/bot", seed=1)
    second = await asyncio.wait_for(call.read(), 30)
    assert second.event.name == "acme/bot" and second.event.version == 2
    call.cancel()

    # a tenant key cannot use it
    tenant_call = rig.stub.WatchTenantAdapters(requests(), metadata=tenant_metadata("acme"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tenant_call.read()
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # and a service acting for no tenant cannot use tenant RPCs
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.stub.GetAdapter(reg_pb.GetAdapterRequest(ref="acme/bot"), metadata=service_only)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_tenant_sequences_count_only_the_tenants_events(rig):
    """Issue 12: global sequence numbers showed gaps from other tenants' changes."""
    for n in range(3):
        await rig.push("globex", f"globex/b{n}")
    await rig.push("acme", "acme/bot")
    await rig.push("acme", "acme/bot", seed=1)
    call = rig.stub.WatchAdapters(
        reg_pb.WatchAdaptersRequest(after_sequence=1), metadata=tenant_metadata("acme")
    )
    replay = await asyncio.wait_for(call.read(), 30)
    call.cancel()
    assert (replay.sequence, replay.version) == (2, 2)  # acme's second event, resumed after 1


async def test_registry_polls_once_per_interval_however_many_streams(rig):
    """Defect 6: every stream polled the database itself, once a second."""
    queries: list[str] = []
    listener = lambda *args: queries.append(args[2])  # noqa: E731
    event.listen(rig.app.registry.store.engine, "before_cursor_execute", listener)
    try:
        calls = []
        for n in range(20):
            tenant = "acme" if n % 2 else "globex"
            calls.append(
                rig.stub.WatchAdapters(
                    reg_pb.WatchAdaptersRequest(), metadata=tenant_metadata(tenant)
                )
            )
        await asyncio.sleep(1.0)  # streams open and settle
        queries.clear()
        await asyncio.sleep(2.0)  # poll interval 0.2 s: about 10 polls in all
        for call in calls:
            call.cancel()
    finally:
        event.remove(rig.app.registry.store.engine, "before_cursor_execute", listener)
    assert len(queries) <= 15, len(queries)  # per-stream polling: ~200
