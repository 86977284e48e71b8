"""`/v1/fine_tuning/jobs`: OpenAI's job bodies → training's `JobSpec`, and back.

`fine_tuned_model` is the adapter the job publishes (`tenant/<suffix>@<version>`), a
`model` chat accepts as is. The `loraplex` extension carries what OpenAI's body has
no words for: the PEFT method, the LoRA config, more hyperparameters, and the
promotion gate (docs/openai.md).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from pydantic import BaseModel, ConfigDict, Field

from loraplex.training.v1 import training_service_pb2 as tr_pb
from services.common.adapter_ref import parse_name
from services.common.context import current_tenant
from services.common.errors import InvalidArgument, NotFound
from services.common.kit import Blocking
from services.common.openai_json import OpenAIBody, parse_body, read_json
from services.gateway import convert
from services.gateway.files import FINE_TUNE
from services.gateway.store import GatewayStore, JobExtras
from services.gateway.upstream import TrainingUpstream

#: `learning_rate_multiplier` scales this (LoRA's usual rate); `loraplex.hyperparameters
#: .learning_rate` sets the rate itself.
BASE_LEARNING_RATE = 2e-4
PEFT_METHODS = {
    "lora": tr_pb.METHOD_LORA,
    "qlora": tr_pb.METHOD_QLORA,
    "ia3": tr_pb.METHOD_IA3,
    "prompt_tuning": tr_pb.METHOD_PROMPT_TUNING,
    "prefix_tuning": tr_pb.METHOD_PREFIX_TUNING,
    "p_tuning": tr_pb.METHOD_P_TUNING,
    "full": tr_pb.METHOD_FULL,
    "last_layers": tr_pb.METHOD_LAST_LAYERS,
}
TASKS = {
    "instruction": tr_pb.TASK_INSTRUCTION,
    "continued_pretraining": tr_pb.TASK_CONTINUED_PRETRAINING,
}
#: Jobs scanned for one list request (training pages newest first).
MAX_SCAN = 2000


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate_multiplier: float | Literal["auto"] = "auto"


class Supervised(BaseModel):
    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    type: str
    supervised: Supervised | None = None


class Publish(BaseModel):
    model_config = ConfigDict(extra="forbid")
    promote_alias: str = ""
    promote_if: str = ""


class Extension(BaseModel):
    """`extra_body={"loraplex": {...}}` on job creation."""

    model_config = ConfigDict(extra="forbid")
    peft_method: str = "lora"
    task: str = "instruction"
    lora: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    publish: Publish | None = None
    validation_ratio: float = 0.0
    test_ratio: float = 0.0


class JobBody(OpenAIBody):
    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    suffix: str | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None
    loraplex: Extension | None = None


class FineTuningRoutes:
    def __init__(self, store: GatewayStore, training: TrainingUpstream, blocking: Blocking) -> None:
        self.store = store
        self.training = training
        self.blocking = blocking
        self.router = APIRouter(prefix="/v1/fine_tuning/jobs")
        self.router.add_api_route("", self.create, methods=["POST"])
        self.router.add_api_route("", self.list, methods=["GET"])
        self.router.add_api_route("/{job_id}", self.get, methods=["GET"])
        self.router.add_api_route("/{job_id}/cancel", self.cancel, methods=["POST"])
        self.router.add_api_route("/{job_id}/events", self.events, methods=["GET"])
        self.router.add_api_route("/{job_id}/checkpoints", self.checkpoints, methods=["GET"])

    async def create(self, request: Request) -> JSONResponse:
        tenant = current_tenant()
        body = parse_body(JobBody, await read_json(request))
        hyper = _hyperparameters(body)
        _check_metadata(body.metadata or {})
        train = await self._dataset(tenant, body.training_file, "training_file")
        validation = ""
        if body.validation_file:
            validation = await self._dataset(tenant, body.validation_file, "validation_file")
        spec = job_spec(tenant, body, hyper, train, validation)
        job = await self.training.create_job(tenant, spec)
        extras = JobExtras(
            job.id,
            body.model,
            body.training_file,
            body.validation_file or "",
            body.suffix or "",
            body.seed,
            body.metadata or {},
            {"learning_rate_multiplier": _number(hyper.learning_rate_multiplier)},
        )
        await self.blocking(self.store.add_job, tenant, extras)
        return JSONResponse(convert.job_object(job, extras, tenant))

    async def list(self, after: str = "", limit: int = 20) -> JSONResponse:
        if not 1 <= limit <= 100:
            raise InvalidArgument("limit must be between 1 and 100")
        tenant = current_tenant()
        jobs: list[tr_pb.Job] = []
        token, scanned, skipping = "", 0, bool(after)
        while scanned < MAX_SCAN and len(jobs) <= limit:
            reply = await self.training.list_jobs(tenant, 100, token)
            for job in reply.jobs:
                if not skipping:
                    jobs.append(job)
                skipping = skipping and job.id != after
            scanned += len(reply.jobs)
            token = reply.next_page_token
            if not token:
                break
        extras = await self.blocking(self.store.job_extras, tenant, [j.id for j in jobs])
        data = [convert.job_object(j, extras.get(j.id), tenant) for j in jobs[:limit]]
        return JSONResponse(convert.page(data, len(jobs) > limit))

    async def get(self, job_id: str) -> JSONResponse:
        tenant = current_tenant()
        return JSONResponse(await self._job(tenant, await self.training.get_job(tenant, job_id)))

    async def cancel(self, job_id: str) -> JSONResponse:
        tenant = current_tenant()
        return JSONResponse(await self._job(tenant, await self.training.cancel_job(tenant, job_id)))

    async def events(self, job_id: str, after: str = "", limit: int = 20) -> JSONResponse:
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit must be between 1 and 1000")
        events = await self.training.events(current_tenant(), job_id)
        data = [convert.event_object(job_id, e) for e in reversed(events)]  # newest first
        if after:
            ids = [d["id"] for d in data]
            data = data[ids.index(after) + 1 :] if after in ids else []
        return JSONResponse(convert.page(data[:limit], len(data) > limit))

    async def checkpoints(self, job_id: str, after: str = "", limit: int = 10) -> JSONResponse:
        tenant = current_tenant()
        job = await self.training.get_job(tenant, job_id)
        data = convert.checkpoint_objects(job, await self.training.events(tenant, job_id))
        if after:
            ids = [d["id"] for d in data]
            data = data[ids.index(after) + 1 :] if after in ids else []
        return JSONResponse(convert.page(data[:limit], len(data) > limit))

    async def _job(self, tenant: str, job: tr_pb.Job) -> dict[str, Any]:
        extras = await self.blocking(self.store.job_extras, tenant, [job.id])
        return convert.job_object(job, extras.get(job.id), tenant)

    async def _dataset(self, tenant: str, file_id: str, field: str) -> str:
        try:
            record = await self.blocking(self.store.get_file, tenant, file_id)
        except NotFound:
            raise NotFound(f"{field}: no file {file_id[:64]!r}") from None
        if record.purpose != FINE_TUNE:
            raise InvalidArgument(
                f"{field}: file {file_id} was not uploaded with purpose 'fine-tune'"
            )
        return record.dataset_id


def job_spec(
    tenant: str, body: JobBody, hyper: Hyperparameters, train: str, validation: str
) -> tr_pb.JobSpec:
    ext = body.loraplex or Extension()
    if ext.peft_method not in PEFT_METHODS:
        raise InvalidArgument(f"loraplex.peft_method: use one of {', '.join(PEFT_METHODS)}")
    if ext.task not in TASKS:
        raise InvalidArgument(f"loraplex.task: use one of {', '.join(TASKS)}")
    name = body.suffix or f"ft-{uuid.uuid4().hex[:8]}"
    parse_name(f"{tenant}/{name}")  # the registry's grammar: a bad suffix is a 400 here
    spec = tr_pb.JobSpec(
        base_model=body.model,
        method=PEFT_METHODS[ext.peft_method],
        task=TASKS[ext.task],
        train=[tr_pb.DatasetInput(dataset_id=train)],
        validation_dataset_id=validation,
        validation_ratio=ext.validation_ratio,
        test_ratio=ext.test_ratio,
        publish=tr_pb.PublishConfig(
            adapter_name=f"{tenant}/{name}",
            promote_alias=ext.publish.promote_alias if ext.publish else "",
            promote_if=ext.publish.promote_if if ext.publish else "",
        ),
    )
    try:
        json_format.ParseDict(ext.hyperparameters or {}, spec.hyperparameters)
        json_format.ParseDict(ext.lora or {}, spec.lora)
    except json_format.ParseError as exc:
        raise InvalidArgument(f"loraplex: {exc}") from None
    hp = spec.hyperparameters
    if hyper.n_epochs != "auto":
        hp.epochs = hyper.n_epochs
    if hyper.batch_size != "auto":
        hp.batch_size = hyper.batch_size
    if hyper.learning_rate_multiplier != "auto":
        hp.learning_rate = hyper.learning_rate_multiplier * BASE_LEARNING_RATE
    if body.seed is not None:
        hp.seed = body.seed
    return spec


def _hyperparameters(body: JobBody) -> Hyperparameters:
    method = body.method
    if method is not None and method.type != "supervised":
        raise InvalidArgument(
            f"method.type {method.type[:40]!r} is not supported; only 'supervised' fine-tuning"
            " (dpo and reinforcement are not available)"
        )
    inner = method.supervised.hyperparameters if method and method.supervised else None
    if inner is not None and body.hyperparameters is not None:
        raise InvalidArgument("give hyperparameters in method.supervised or at the top, not both")
    hyper = inner or body.hyperparameters or Hyperparameters()
    checks = [
        (hyper.n_epochs, 1, 50, "n_epochs"),
        (hyper.batch_size, 1, 256, "batch_size"),
        (hyper.learning_rate_multiplier, 1e-3, 50, "learning_rate_multiplier"),
    ]
    for value, low, high, name in checks:
        if value != "auto" and not low <= value <= high:
            raise InvalidArgument(f"hyperparameters.{name} must be between {low:g} and {high:g}")
    return hyper


def _check_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > 16:
        raise InvalidArgument("metadata: at most 16 keys")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise InvalidArgument(
                "metadata: keys of at most 64 and values of at most 512 characters"
            )


def _number(value: float | str) -> float | None:
    return None if value == "auto" else float(value)
