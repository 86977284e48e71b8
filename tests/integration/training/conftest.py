"""Training servers on loopback with a tiny base model and an in-memory registry edge."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from loraplex.training.v1 import training_service_pb2 as pb
from loraplex.training.v1 import training_service_pb2_grpc as pb_grpc
from services.common.testing import tenant_metadata
from services.training.publisher import PublishedVersion
from services.training.settings import TrainingSettings
from tests.unit.training.conftest import models_dir  # noqa: F401 - shared fixture

ACME = tenant_metadata("acme")
GLOBEX = tenant_metadata("globex")


@dataclass
class MemoryPublisher:
    """The registry edge as a dict: records what was pushed and which aliases moved."""

    pushed: list[dict] = field(default_factory=list)
    aliases: dict[tuple[str, str], int] = field(default_factory=dict)

    async def push(self, tenant, name, folder, lineage, metrics, description) -> PublishedVersion:
        copy = Path(folder).parent / f"pushed-{len(self.pushed)}"
        shutil.copytree(folder, copy)
        version = 1 + sum(1 for p in self.pushed if p["name"] == name)
        self.pushed.append(
            {
                "tenant": tenant,
                "name": name,
                "folder": copy,
                "lineage": lineage,
                "metrics": metrics,
                "version": version,
            }
        )
        return PublishedVersion(name, version)

    async def set_alias(self, tenant, name, alias, version) -> None:
        self.aliases[(name, alias)] = version

    async def find(self, tenant, name, training_job) -> PublishedVersion | None:
        for pushed in reversed(self.pushed):
            if pushed["name"] == name and pushed["lineage"]["training_job"] == training_job:
                return PublishedVersion(name, pushed["version"])
        return None


def settings_for(data_dir: Path, models: Path, **extra) -> TrainingSettings:
    return TrainingSettings(
        data_dir=data_dir,
        models_dir=models,
        event_poll_seconds=0.05,
        cancel_grace_seconds=3,
        **extra,
    )


def stub(channel: grpc.aio.Channel) -> pb_grpc.TrainingServiceStub:
    return pb_grpc.TrainingServiceStub(channel)


async def upload(channel, rows: list[dict] | bytes, name: str, metadata=ACME) -> pb.Dataset:
    data = rows if isinstance(rows, bytes) else "".join(json.dumps(r) + "\n" for r in rows).encode()

    async def requests() -> AsyncIterator[pb.UploadDatasetRequest]:
        yield pb.UploadDatasetRequest(header=pb.DatasetHeader(name=name, size_bytes=len(data)))
        for i in range(0, len(data), 100):
            yield pb.UploadDatasetRequest(data=data[i : i + 100])

    response = await stub(channel).UploadDataset(requests(), metadata=metadata, timeout=10)
    return response.dataset


async def collect_events(channel, job_id: str, after: int = 0, deadline: float = 600):
    call = stub(channel).StreamJobEvents(
        pb.StreamJobEventsRequest(id=job_id, after_sequence=after), metadata=ACME, timeout=deadline
    )
    return [event async for event in call]


async def wait_for(
    channel, job_id: str, kind: str, deadline: float = 60
) -> pb.StreamJobEventsResponse:
    call = stub(channel).StreamJobEvents(
        pb.StreamJobEventsRequest(id=job_id), metadata=ACME, timeout=deadline
    )
    async for event in call:
        if event.WhichOneof("event") == kind:
            call.cancel()
            return event
    raise AssertionError(f"job ended without a {kind} event")


def toy_spec(dataset_id: str, **hp) -> pb.JobSpec:
    """A LoRA on every linear layer that learns the toy mapping in a few seconds."""
    defaults = dict(learning_rate=1e-2, epochs=40, batch_size=8, seed=1, max_seq_length=64)
    defaults.update(hp)
    return pb.JobSpec(
        base_model="tiny",
        method=pb.METHOD_LORA,
        train=[pb.DatasetInput(dataset_id=dataset_id)],
        hyperparameters=pb.Hyperparameters(**defaults),
        lora=pb.LoraConfig(
            rank=8,
            alpha=16,
            dropout=0.0,
            target_modules=[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
        ),
    )
