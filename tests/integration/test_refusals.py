"""Requests every service must refuse with INVALID_ARGUMENT and a message that says why.

- Bytes that do not decode as the method's request (truncated, or a string field that
  is not UTF-8): every RPC of the four services, raw bytes through a generic channel.
- Names with a NUL or a bidi override, a search `min_score` that is not finite, and
  `gradient_accumulation_steps=0`: refused at the core, so every front end refuses them.
"""

from __future__ import annotations

import contextlib
import math

import grpc
import pytest

from loraplex.inference.v1 import inference_service_pb2
from loraplex.registry.v1 import registry_service_pb2 as reg_pb
from loraplex.registry.v1 import registry_service_pb2_grpc as reg_grpc
from loraplex.retrieval.v1 import retrieval_service_pb2 as ret_pb
from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as ret_grpc
from loraplex.training.v1 import training_service_pb2 as tr_pb
from loraplex.training.v1 import training_service_pb2_grpc as tr_grpc
from services.common.testing import running_server, tenant_metadata
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.retrieval.app import RetrievalApp
from services.retrieval.settings import RetrievalSettings
from services.training.app import TrainingApp
from services.training.settings import TrainingSettings
from tests.unit.retrieval.shared import shared_embedder

pytestmark = pytest.mark.integration

ACME = tenant_metadata("acme")
#: Field 1, length 5, then 2 bytes: a truncated message, whatever the type.
TRUNCATED = b"\x0a\x05ab"
#: Field 1 holding bytes that are not UTF-8: invalid wherever field 1 is a string.
NOT_UTF8 = b"\x0a\x02\xff\xfe"


def _raw(data: bytes) -> bytes:
    return data


@contextlib.asynccontextmanager
async def _server(name: str, tmp_path):
    if name == "RegistryService":
        settings = RegistrySettings(data_dir=tmp_path)
        app = RegistryApp(settings)
    elif name == "RetrievalService":
        settings = RetrievalSettings(data_dir=tmp_path, executor_threads=2)
        app = RetrievalApp(settings, shared_embedder())
    elif name == "TrainingService":
        settings = TrainingSettings(data_dir=tmp_path, models_dir=tmp_path / "models")
        app = TrainingApp(settings)
    else:  # the interceptor refuses the bytes before the servicer: no engine needed
        from services.inference.app import InferenceApp
        from services.inference.settings import InferenceSettings

        settings = InferenceSettings(data_dir=tmp_path)
        app = InferenceApp(settings)

        async def no_engine() -> None:
            pass

        app.start = no_engine  # type: ignore[method-assign]
        app.stop = no_engine  # type: ignore[method-assign]
    async with running_server(settings, app) as running:
        yield running


async def _raw_call(channel: grpc.aio.Channel, method, body: bytes) -> grpc.aio.AioRpcError:
    path = f"/{method.containing_service.full_name}/{method.name}"
    factory = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }[(method.client_streaming, method.server_streaming)]
    rpc = factory(path, request_serializer=_raw, response_deserializer=_raw)

    async def one():
        yield body

    # WatchTenantAdapters is service-level: a service key acting for no tenant.
    service_level = method.name == "WatchTenantAdapters"
    metadata = (("authorization", "Bearer lpx_test_inference_key"),) if service_level else ACME
    with pytest.raises(grpc.aio.AioRpcError) as err:
        call = rpc(one() if method.client_streaming else body, metadata=metadata, timeout=10)
        if method.server_streaming:
            async for _ in call:
                pass
        else:
            await call
    return err.value


@pytest.mark.parametrize(
    "descriptor",
    [
        reg_pb.DESCRIPTOR.services_by_name["RegistryService"],
        ret_pb.DESCRIPTOR.services_by_name["RetrievalService"],
        tr_pb.DESCRIPTOR.services_by_name["TrainingService"],
        inference_service_pb2.DESCRIPTOR.services_by_name["InferenceService"],
    ],
    ids=lambda d: d.name,
)
async def test_undecodable_requests_are_invalid_argument_naming_the_message(descriptor, tmp_path):
    async with _server(descriptor.name, tmp_path) as running:
        for method in descriptor.methods:
            first = method.input_type.fields_by_number.get(1)
            cases = [TRUNCATED]
            if first is not None and first.type == first.TYPE_STRING:
                cases.append(NOT_UTF8)
            for body in cases:
                error = await _raw_call(running.channel, method, body)
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.name, body)
                assert method.input_type.full_name in error.details(), error.details()


async def _status(awaitable) -> tuple[grpc.StatusCode, str]:
    try:
        await awaitable
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


async def test_training_refuses_control_and_bidi_names_and_zero_accumulation(tmp_path):
    async with _server("TrainingService", tmp_path) as running:
        stub = tr_grpc.TrainingServiceStub(running.channel)
        data = b'{"prompt": "a", "completion": "b"}\n'
        for name in ("x\0y", "report\u202etxt.jsonl", "tab\there"):

            def upload(name=name):
                header = tr_pb.DatasetHeader(name=name, size_bytes=len(data))
                yield tr_pb.UploadDatasetRequest(header=header)
                yield tr_pb.UploadDatasetRequest(data=data)

            code, details = await _status(stub.UploadDataset(upload(), metadata=ACME, timeout=10))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, name
            assert "dataset name" in details and "U+" in details
        listed = await stub.ListDatasets(tr_pb.ListDatasetsRequest(), metadata=ACME, timeout=10)
        assert not listed.datasets  # nothing was stored

        spec = tr_pb.JobSpec(
            base_model="tiny",
            method=tr_pb.METHOD_LORA,
            train=[tr_pb.DatasetInput(dataset_id="d")],
            hyperparameters=tr_pb.Hyperparameters(gradient_accumulation_steps=0),
        )
        request = tr_pb.CreateJobRequest(spec=spec)
        code, details = await _status(stub.CreateJob(request, metadata=ACME, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "gradient_accumulation_steps must be in [1, 1024]" in details


async def test_retrieval_refuses_bidi_ids_and_non_finite_thresholds(tmp_path):
    async with _server("RetrievalService", tmp_path) as running:
        stub = ret_grpc.RetrievalServiceStub(running.channel)
        create = ret_pb.CreateCollectionRequest(name="x\0y")
        code, _ = await _status(stub.CreateCollection(create, metadata=ACME, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        create = ret_pb.CreateCollectionRequest(name="handbook")
        await stub.CreateCollection(create, metadata=ACME, timeout=60)

        for doc_id in ("evil\u202etxt", "nul\0id", "zero\u200bwidth"):
            document = ret_pb.Document(id=doc_id, text="refunds take five days")

            def batch(document=document):
                yield ret_pb.UpsertDocumentsRequest(collection="handbook", documents=[document])

            call = stub.UpsertDocuments(batch(), metadata=ACME, timeout=60)
            code, details = await _status(_drain(call))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, doc_id
            assert "U+" in details

        for bad in (math.nan, math.inf, -math.inf):
            search = ret_pb.SearchChunksRequest(collection="handbook", query="q", min_score=bad)
            code, details = await _status(stub.SearchChunks(search, metadata=ACME, timeout=30))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, bad
            assert "min_score must be a finite number" in details
        too_many = ret_pb.SearchChunksRequest(collection="handbook", query="q", top_k=101)
        code, _ = await _status(stub.SearchChunks(too_many, metadata=ACME, timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        stats = ret_pb.GetCollectionStatsRequest(name="handbook")
        assert (await stub.GetCollectionStats(stats, metadata=ACME, timeout=10)).documents == 0


async def _drain(call) -> None:
    async for _ in call:
        pass


async def test_registry_names_and_aliases_refuse_controls(tmp_path):
    async with _server("RegistryService", tmp_path) as running:
        stub = reg_grpc.RegistryServiceStub(running.channel)
        for ref in ("acme/x\0y", "acme/bot\u202e", "acme/bot@pr\u202eod"):
            request = reg_pb.GetAdapterRequest(ref=ref)
            code, _ = await _status(stub.GetAdapter(request, metadata=ACME, timeout=10))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, ref
        alias = reg_pb.SetAliasRequest(name="acme/bot", alias="pr\u202eod", version=1)
        code, _ = await _status(stub.SetAlias(alias, metadata=ACME, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
