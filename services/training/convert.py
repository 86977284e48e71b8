"""Protobuf <-> core records: the only place that knows both shapes."""

from __future__ import annotations

from loraplex.training.v1 import training_service_pb2 as pb
from services.common.timestamps import timestamp
from services.training import spec as core
from services.training.store import DatasetRecord, EventRecord, JobRecord

FORMAT_TO_PB = {
    "prompt_completion": pb.DATASET_FORMAT_PROMPT_COMPLETION,
    "messages": pb.DATASET_FORMAT_MESSAGES,
    "text": pb.DATASET_FORMAT_TEXT,
    "grounded_qa": pb.DATASET_FORMAT_GROUNDED_QA,
}
FORMAT_FROM_PB = {v: k for k, v in FORMAT_TO_PB.items()}
METHOD_FROM_PB = {
    pb.METHOD_UNSPECIFIED: "lora",
    pb.METHOD_LORA: "lora",
    pb.METHOD_QLORA: "qlora",
    pb.METHOD_IA3: "ia3",
    pb.METHOD_PROMPT_TUNING: "prompt_tuning",
    pb.METHOD_PREFIX_TUNING: "prefix_tuning",
    pb.METHOD_P_TUNING: "p_tuning",
    pb.METHOD_FULL: "full",
    pb.METHOD_LAST_LAYERS: "last_layers",
}
METHOD_TO_PB = {v: k for k, v in METHOD_FROM_PB.items() if k != pb.METHOD_UNSPECIFIED}
TASK_FROM_PB = {
    pb.TASK_UNSPECIFIED: "instruction",
    pb.TASK_INSTRUCTION: "instruction",
    pb.TASK_CONTINUED_PRETRAINING: "continued_pretraining",
}
TASK_TO_PB = {
    "instruction": pb.TASK_INSTRUCTION,
    "continued_pretraining": pb.TASK_CONTINUED_PRETRAINING,
}
STATE_TO_PB = {
    "queued": pb.JOB_STATE_QUEUED,
    "running": pb.JOB_STATE_RUNNING,
    "succeeded": pb.JOB_STATE_SUCCEEDED,
    "failed": pb.JOB_STATE_FAILED,
    "cancelled": pb.JOB_STATE_CANCELLED,
}
_HP_FIELDS = [f.name for f in pb.Hyperparameters.DESCRIPTOR.fields]


def dataset_to_pb(record: DatasetRecord) -> pb.Dataset:
    return pb.Dataset(
        id=record.id,
        name=record.name,
        format=FORMAT_TO_PB[record.format],
        rows=record.rows,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        created_at=timestamp(record.created_at),
    )


def spec_from_pb(msg: pb.JobSpec) -> core.JobSpec:
    """Zeros stay zeros: the core fills in the method's defaults."""
    given = msg.hyperparameters
    hp = core.Hyperparameters(
        **{
            name: getattr(given, name)
            for name in _HP_FIELDS
            # a field with presence (`optional`) left unset takes the core's default
            if not given.DESCRIPTOR.fields_by_name[name].has_presence or given.HasField(name)
        }
    )
    return core.JobSpec(
        base_model=msg.base_model,
        train=[core.DatasetInput(d.dataset_id, d.weight) for d in msg.train],
        method=METHOD_FROM_PB.get(msg.method, "unknown"),
        task=TASK_FROM_PB.get(msg.task, "unknown"),
        validation_dataset_id=msg.validation_dataset_id,
        test_dataset_id=msg.test_dataset_id,
        validation_ratio=msg.validation_ratio,
        test_ratio=msg.test_ratio,
        hyperparameters=hp,
        lora=core.LoraSettings(
            rank=msg.lora.rank,
            alpha=msg.lora.alpha,
            dropout=msg.lora.dropout if msg.HasField("lora") else 0.05,
            target_modules=list(msg.lora.target_modules),
            init=msg.lora.init,
            last_layers=msg.lora.last_layers,
        ),
        num_virtual_tokens=msg.prompt.num_virtual_tokens,
        publish=core.PublishSettings(
            adapter_name=msg.publish.adapter_name,
            promote_alias=msg.publish.promote_alias,
            promote_if=msg.publish.promote_if,
        ),
    )


def spec_to_pb(spec: core.JobSpec) -> pb.JobSpec:
    return pb.JobSpec(
        base_model=spec.base_model,
        method=METHOD_TO_PB[spec.method],
        task=TASK_TO_PB[spec.task],
        train=[pb.DatasetInput(dataset_id=d.dataset_id, weight=d.weight) for d in spec.train],
        validation_dataset_id=spec.validation_dataset_id,
        test_dataset_id=spec.test_dataset_id,
        validation_ratio=spec.validation_ratio,
        test_ratio=spec.test_ratio,
        hyperparameters=pb.Hyperparameters(**spec.hyperparameters.__dict__),
        lora=pb.LoraConfig(**spec.lora.__dict__),
        prompt=pb.PromptConfig(num_virtual_tokens=spec.num_virtual_tokens),
        publish=pb.PublishConfig(**spec.publish.__dict__),
    )


def job_to_pb(record: JobRecord) -> pb.Job:
    return pb.Job(
        id=record.id,
        spec=spec_to_pb(core.JobSpec.from_dict(record.spec)),
        state=STATE_TO_PB[record.state],
        queue_position=record.queue_position,
        step=record.step,
        total_steps=record.total_steps,
        metrics=record.metrics,
        failure_reason=record.failure_reason,
        adapter_ref=record.adapter_ref,
        created_at=timestamp(record.created_at),
        started_at=timestamp(record.started_at),
        finished_at=timestamp(record.finished_at),
        attempts=record.attempts,
    )


_EVENT_TYPES = {
    "queued": pb.QueuedEvent,
    "started": pb.StartedEvent,
    "step": pb.StepEvent,
    "evaluation": pb.EvaluationEvent,
    "checkpoint": pb.CheckpointEvent,
    "published": pb.PublishedEvent,
    "failed": pb.FailedEvent,
    "cancelled": pb.CancelledEvent,
    "succeeded": pb.SucceededEvent,
    "notice": pb.NoticeEvent,
}


def event_to_pb(event: EventRecord) -> pb.StreamJobEventsResponse:
    kind = _EVENT_TYPES[event.kind]
    known = {f.name for f in kind.DESCRIPTOR.fields}
    body = kind(**{k: v for k, v in event.payload.items() if k in known})
    return pb.StreamJobEventsResponse(
        sequence=event.sequence, time=timestamp(event.time), **{event.kind: body}
    )
