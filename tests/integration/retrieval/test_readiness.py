"""Retrieval admits no call until it has started (issue 13, defect 5).

Before the readiness gate, a search during start-up reached a manager with no
collections loaded and answered NOT_FOUND for a collection that exists.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from services.common import testing
from services.common.channels import open_channel
from services.retrieval.app import SERVICE_NAME, RetrievalApp
from tests.integration.retrieval.conftest import make_settings, serve
from tests.integration.retrieval.helpers import ACME, create, doc, upsert

pytestmark = pytest.mark.integration


async def _live(channel: grpc.aio.Channel) -> None:
    """Waits until the port answers the liveness probe (the server listens)."""
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(600):
        with contextlib.suppress(grpc.aio.AioRpcError):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the server never became live")


async def test_calls_during_start_up_are_unavailable_not_not_found(tmp_path, embedder):
    settings = make_settings(tmp_path)
    async with serve(settings, embedder) as served:
        await create(served.stub, "handbook")
        await upsert(served.stub, "handbook", [[doc("d1", "travel abroad needs approval")]])

    app = RetrievalApp(settings, embedder)
    loaded = asyncio.Event()
    real_open = app.manager.open

    async def held_open() -> None:
        await loaded.wait()
        await real_open()

    app.manager.open = held_open  # start-up stays in "loading indexes" until released
    async with testing.starting_server(settings, app) as (server, starting):
        channel = open_channel(f"127.0.0.1:{server.port}")
        stub = pb_grpc.RetrievalServiceStub(channel)
        await _live(channel)
        ready = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
        )
        assert ready.status == health_pb2.HealthCheckResponse.NOT_SERVING

        calls = (
            stub.GetCollection(pb.GetCollectionRequest(name="handbook"), metadata=ACME, timeout=5),
            stub.SearchChunks(
                pb.SearchChunksRequest(collection="handbook", query="travel", top_k=1),
                metadata=ACME,
                timeout=5,
            ),
            stub.ListCollections(pb.ListCollectionsRequest(), metadata=ACME, timeout=5),
        )
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "starting" in err.value.details()

        loaded.set()
        await starting
        found = await stub.GetCollection(
            pb.GetCollectionRequest(name="handbook"), metadata=ACME, timeout=5
        )
        assert found.collection.name == "handbook"
        hits = await stub.SearchChunks(
            pb.SearchChunksRequest(collection="handbook", query="travel", top_k=1),
            metadata=ACME,
            timeout=30,
        )
        assert [c.document_id for c in hits.chunks] == ["d1"]
        await channel.close()
