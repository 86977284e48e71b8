"""Service keys are scoped: every RPC of every server, called with every service key.

A service key acting for some tenant may call only what its service needs of that
server (inference: read adapters, search; training: publish, and list versions so it
publishes once); every other RPC answers PERMISSION_DENIED before the servicer runs.
Inference's own RPCs are covered by its app declaring no scopes (tests/integration/inference
run that server with the real engine).
"""

from __future__ import annotations

import contextlib

import grpc
import pytest

from loraplex.registry.v1 import registry_service_pb2
from loraplex.retrieval.v1 import retrieval_service_pb2
from loraplex.training.v1 import training_service_pb2
from services.common.testing import TEST_SERVICE_KEYS, running_server, service_metadata
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.retrieval.app import RetrievalApp
from services.retrieval.settings import RetrievalSettings
from services.training.app import TrainingApp
from services.training.settings import TrainingSettings
from tests.unit.retrieval.shared import shared_embedder

pytestmark = pytest.mark.integration

#: What each service key may call on each server; every other pair must be refused.
ALLOWED = {
    "RegistryService": {
        "inference": {
            "GetAdapter",
            "ListAdapters",
            "CheckCompatibility",
            "DownloadAdapter",
            "WatchAdapters",
            "WatchTenantAdapters",
        },
        "training": {"PushAdapter", "SetAlias", "ListAdapterVersions"},
        "gateway": set(),
    },
    "RetrievalService": {
        "inference": {"SearchChunks"},
        "training": set(),
        # the OpenAI gateway: vector stores and embeddings, never another service's RPCs
        "gateway": {
            "CreateCollection",
            "GetCollection",
            "ListCollections",
            "DeleteCollection",
            "UpsertDocuments",
            "DeleteDocuments",
            "SearchChunks",
            "GetCollectionStats",
            "EmbedTexts",
        },
    },
    "TrainingService": {
        "inference": set(),
        "training": set(),
        "gateway": {
            "UploadDataset",
            "GetDataset",
            "ListDatasets",
            "CreateJob",
            "GetJob",
            "ListJobs",
            "CancelJob",
            "StreamJobEvents",
        },
    },
}


def _raw(data: bytes) -> bytes:
    return data


async def _call(channel: grpc.aio.Channel, method, metadata) -> grpc.StatusCode:
    """Calls with an empty message; returns the status the server answered with."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = (method.client_streaming, method.server_streaming)
    factory = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }[kind]
    rpc = factory(path, request_serializer=_raw, response_deserializer=_raw)

    async def one() -> object:
        yield b""

    request = one() if method.client_streaming else b""
    try:
        call = rpc(request, metadata=metadata, timeout=5)
        if method.server_streaming:
            async for _ in call:
                break
            call.cancel()
        else:
            await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@contextlib.asynccontextmanager
async def _server(name: str, tmp_path):
    if name == "RegistryService":
        settings = RegistrySettings(data_dir=tmp_path)
        app = RegistryApp(settings)
    elif name == "RetrievalService":
        settings = RetrievalSettings(data_dir=tmp_path, executor_threads=2)
        app = RetrievalApp(settings, shared_embedder())
    else:
        settings = TrainingSettings(data_dir=tmp_path, models_dir=tmp_path / "models")
        app = TrainingApp(settings)
    async with running_server(settings, app) as running:
        yield running


@pytest.mark.parametrize(
    "descriptor",
    [
        registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"],
        retrieval_service_pb2.DESCRIPTOR.services_by_name["RetrievalService"],
        training_service_pb2.DESCRIPTOR.services_by_name["TrainingService"],
    ],
    ids=lambda d: d.name,
)
async def test_every_rpc_refuses_service_keys_outside_their_scope(descriptor, tmp_path):
    async with _server(descriptor.name, tmp_path) as running:
        for service in TEST_SERVICE_KEYS:
            allowed = ALLOWED[descriptor.name][service]
            assert allowed <= {m.name for m in descriptor.methods}
            for method in descriptor.methods:
                code = await _call(running.channel, method, service_metadata(service, "acme"))
                if method.name in allowed:
                    assert code != grpc.StatusCode.PERMISSION_DENIED, (service, method.name)
                else:
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (service, method.name)
