"""Hostile-input corpus for training: one row per attack, against one real server.

Each case must get exactly the status it names (never INTERNAL or UNKNOWN);
afterwards the service still answers its readiness probe and both tenants'
datasets and jobs are exactly as seeded. Add a case: one `Case(...)` line.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loraplex.training.v1 import training_service_pb2 as pb
from loraplex.training.v1 import training_service_pb2_grpc as pb_grpc
from services.common.testing import running_server
from services.training.app import SERVICE_NAME, TrainingApp
from tests.integration.training.conftest import (
    ACME,
    GLOBEX,
    MemoryPublisher,
    settings_for,
    stub,
    toy_spec,
    upload,
)
from tests.unit.training.tiny_model import toy_rows

pytestmark = pytest.mark.integration
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
Stub = pb_grpc.TrainingServiceStub
Send = Callable[[Stub, str], Awaitable[object]]  # (stub, acme's dataset id)


def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


@dataclass(frozen=True)
class Case:
    name: str
    send: Send
    code: grpc.StatusCode


def _job(edit: Callable[[pb.JobSpec], None]) -> Send:
    async def send(api: Stub, dataset_id: str) -> object:
        spec = toy_spec(dataset_id)
        edit(spec)
        return await api.CreateJob(pb.CreateJobRequest(spec=spec), metadata=ACME, timeout=30)

    return send


def _set(path: str, value: object) -> Callable[[pb.JobSpec], None]:
    def edit(spec: pb.JobSpec) -> None:
        *parents, name = path.split(".")
        target = spec
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)

    return edit


def _modules(*names: str) -> Callable[[pb.JobSpec], None]:
    def edit(spec: pb.JobSpec) -> None:
        del spec.lora.target_modules[:]
        spec.lora.target_modules.extend(names)

    return edit


def _weight(value: float) -> Callable[[pb.JobSpec], None]:
    return lambda spec: setattr(spec.train[0], "weight", value)


def _lists(token: str = "", size: int = 0) -> list[Send]:
    jobs = pb.ListJobsRequest(page_token=token, page_size=size)
    datasets = pb.ListDatasetsRequest(page_token=token, page_size=size)
    return [
        lambda api, _: api.ListJobs(jobs, metadata=ACME, timeout=30),
        lambda api, _: api.ListDatasets(datasets, metadata=ACME, timeout=30),
    ]


def _upload(data: bytes, name: str = "hostile") -> Send:
    async def send(api: Stub, _: str) -> object:
        async def requests() -> AsyncIterator[pb.UploadDatasetRequest]:
            yield pb.UploadDatasetRequest(header=pb.DatasetHeader(name=name, size_bytes=len(data)))
            for i in range(0, len(data), 64 * 1024):
                yield pb.UploadDatasetRequest(data=data[i : i + 64 * 1024])

        return await api.UploadDataset(requests(), metadata=ACME, timeout=60)

    return send


GOOD_ROW = json.dumps({"prompt": "a", "completion": "b"}).encode() + b"\n"
TOKENS = {
    "nested 100k deep": _token("[" * 100_000),
    "a number": _token("5"),
    "a list of numbers": _token("[1,2,3]"),
    "an object and a string": _token('[{"a":1},"x"]'),
    "a bool timestamp": _token('[true,"x"]'),
    "not base64 JSON": "!!!",
}
CASES = [
    Case("lora.alpha NaN", _job(_set("lora.alpha", math.nan)), INVALID),
    Case("lora.alpha inf", _job(_set("lora.alpha", math.inf)), INVALID),
    Case("lora.alpha -1e30", _job(_set("lora.alpha", -1e30)), INVALID),
    Case("seed -1", _job(_set("hyperparameters.seed", -1)), INVALID),
    Case(
        "trainable_last_layers -3", _job(_set("hyperparameters.trainable_last_layers", -3)), INVALID
    ),
    Case("dataset weight inf", _job(_weight(math.inf)), INVALID),
    Case("dataset weight NaN", _job(_weight(math.nan)), INVALID),
    Case("target_modules path", _job(_modules("../../x")), INVALID),
    Case("target_modules regex", _job(_modules("(a+)+$")), INVALID),
    Case("learning_rate NaN", _job(_set("hyperparameters.learning_rate", math.nan)), INVALID),
    Case("epochs inf", _job(_set("hyperparameters.epochs", math.inf)), INVALID),
    Case("base_model with newline", _job(_set("base_model", "tiny\n")), INVALID),
    Case("base_model path", _job(_set("base_model", "../../etc")), INVALID),
    Case("publish name with newline", _job(_set("publish.adapter_name", "acme/x\n")), INVALID),
    Case("publish for another tenant", _job(_set("publish.adapter_name", "globex/x")), INVALID),
    Case("unknown method", _job(_set("method", 99)), INVALID),
    Case(
        "another tenant's dataset",
        _job(lambda s: setattr(s.train[0], "dataset_id", "ds-x")),
        NOT_FOUND,
    ),
    Case("dataset row nested 100k deep", _upload(GOOD_ROW + b"[" * 100_000 + b"\n"), INVALID),
    Case(
        "dataset row nested in a value", _upload(b'{"prompt": ' + b"[" * 100_000 + b"\n"), INVALID
    ),
    Case("dataset name with slash", _upload(GOOD_ROW, name="../x"), INVALID),
    Case("dataset not UTF-8", _upload(b'{"prompt": "\xff", "completion": "b"}\n'), INVALID),
    Case(
        "get job path",
        lambda api, _: api.GetJob(pb.GetJobRequest(id="../../x"), metadata=ACME),
        NOT_FOUND,
    ),
    Case(
        "events of an unknown job",
        lambda api, _: _drain(
            api.StreamJobEvents(pb.StreamJobEventsRequest(id="job-x"), metadata=ACME)
        ),
        NOT_FOUND,
    ),
    Case(
        "cancel another tenant's job",
        lambda api, _: api.CancelJob(pb.CancelJobRequest(id=FOREIGN_JOB[0]), metadata=ACME),
        NOT_FOUND,
    ),
]
for label, token in TOKENS.items():
    jobs, datasets = _lists(token)
    CASES += [
        Case(f"ListJobs page_token {label}", jobs, INVALID),
        Case(f"ListDatasets page_token {label}", datasets, INVALID),
    ]
CASES += [Case(f"negative page_size {i}", send, INVALID) for i, send in enumerate(_lists(size=-1))]
FOREIGN_JOB: list[str] = []


async def _drain(call) -> list:
    return [item async for item in call]


@dataclass
class Seeded:
    api: Stub
    health: health_pb2_grpc.HealthStub
    dataset_id: str


async def _state(api: Stub) -> tuple:
    out = []
    for who in (ACME, GLOBEX):
        datasets = await api.ListDatasets(pb.ListDatasetsRequest(), metadata=who)
        jobs = await api.ListJobs(pb.ListJobsRequest(), metadata=who)
        out.append(sorted((d.id, d.name, d.sha256, d.rows) for d in datasets.datasets))
        out.append(sorted((j.id, j.state) for j in jobs.jobs))
    return tuple(out)


@pytest.fixture(scope="module")
async def seeded(tmp_path_factory, models_dir) -> AsyncIterator[tuple[Seeded, tuple]]:
    app = TrainingApp(
        settings_for(tmp_path_factory.mktemp("hostile-training"), models_dir),
        publisher=MemoryPublisher(),
    )
    async with running_server(app.settings, app) as srv:
        api = stub(srv.channel)
        dataset = await upload(srv.channel, toy_rows(2), "colors")
        theirs = await upload(srv.channel, toy_rows(2), "theirs", metadata=GLOBEX)
        # Another tenant's job, cancelled so its record stays as it is.
        job = await api.CreateJob(
            pb.CreateJobRequest(spec=toy_spec(theirs.id, max_steps=1)), metadata=GLOBEX
        )
        FOREIGN_JOB[:] = [job.job.id]
        await api.CancelJob(pb.CancelJobRequest(id=job.job.id), metadata=GLOBEX)
        await _wait_settled(api, job.job.id)
        yield Seeded(api, health_pb2_grpc.HealthStub(srv.channel), dataset.id), await _state(api)


async def _wait_settled(api: Stub, job_id: str) -> None:
    """Waits for the foreign job's final event, so its state is stable for comparisons."""
    call = api.StreamJobEvents(pb.StreamJobEventsRequest(id=job_id), metadata=GLOBEX, timeout=600)
    async for _ in call:
        pass


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_input_is_refused_and_harms_nothing(seeded, case: Case):
    served, before = seeded
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await case.send(served.api, served.dataset_id)
    code = err.value.code()
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), err.value.details()
    assert code == case.code, (code, err.value.details())
    assert err.value.details() and "Traceback" not in err.value.details()
    reply = await served.health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert await _state(served.api) == before
