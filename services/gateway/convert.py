"""Training and retrieval messages (and the gateway's records) → OpenAI JSON. Translation only.

Shapes follow the `openai` package's types (tests validate them there): `file`,
`fine_tuning.job` (+ `.event`, `.checkpoint`), `vector_store` (+ `.file`,
`.search_results.page`), `embedding`.
"""

from __future__ import annotations

import base64
from datetime import UTC
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from loraplex.retrieval.v1 import retrieval_service_pb2 as ret_pb
from loraplex.training.v1 import training_service_pb2 as tr_pb
from services.common.openai_json import filter_conditions
from services.gateway.store import FileRecord, JobExtras, VectorStoreFile

#: Training's states as OpenAI's; uploads are validated before a job exists, so no job
#: is ever `validating_files` here.
JOB_STATUS = {
    tr_pb.JOB_STATE_UNSPECIFIED: "queued",
    tr_pb.JOB_STATE_QUEUED: "queued",
    tr_pb.JOB_STATE_RUNNING: "running",
    tr_pb.JOB_STATE_SUCCEEDED: "succeeded",
    tr_pb.JOB_STATE_FAILED: "failed",
    tr_pb.JOB_STATE_CANCELLED: "cancelled",
}


def seconds(stamp: Timestamp) -> int | None:
    if not stamp.seconds and not stamp.nanos:
        return None
    return int(stamp.ToDatetime(tzinfo=UTC).timestamp())


def page(data: list[dict[str, Any]], has_more: bool, **extra: Any) -> dict[str, Any]:
    first = data[0]["id"] if data and "id" in data[0] else None
    last = data[-1]["id"] if data and "id" in data[-1] else None
    return {
        "object": "list",
        "data": data,
        "first_id": first,
        "last_id": last,
        "has_more": has_more,
        **extra,
    }


# -- files --------------------------------------------------------------------------------


def file_object(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": int(record.created_at),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


# -- fine-tuning --------------------------------------------------------------------------


def job_object(job: tr_pb.Job, extras: JobExtras | None, tenant: str) -> dict[str, Any]:
    spec = job.spec
    hp = spec.hyperparameters
    status = JOB_STATUS[job.state]
    error = None
    if status == "failed":
        error = {
            "code": "training_failed",
            "message": job.failure_reason or "failed",
            "param": None,
        }
    multiplier = (extras.method.get("learning_rate_multiplier") if extras else None) or 1.0
    epochs = int(hp.epochs) if float(hp.epochs).is_integer() else hp.epochs
    hyper = {
        "n_epochs": epochs or "auto",
        "batch_size": hp.batch_size or "auto",
        "learning_rate_multiplier": multiplier,
    }
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": seconds(job.created_at) or 0,
        "finished_at": seconds(job.finished_at),
        "model": extras.model if extras else spec.base_model,
        "fine_tuned_model": job.adapter_ref or None,
        "organization_id": tenant,
        "status": status,
        "hyperparameters": hyper,
        "training_file": extras.training_file if extras else "",
        "validation_file": (extras.validation_file or None) if extras else None,
        "result_files": [],
        "trained_tokens": None,
        "error": error,
        "seed": hp.seed,
        "metadata": (extras.metadata or None) if extras else None,
        "user_provided_suffix": (extras.suffix or None) if extras else None,
        "estimated_finish": None,
        "integrations": None,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "loraplex": {
            "step": job.step,
            "total_steps": job.total_steps,
            "metrics": dict(job.metrics),
            "queue_position": job.queue_position,
            "attempts": job.attempts,
            "publish": {
                "adapter_name": spec.publish.adapter_name,
                "promote_alias": spec.publish.promote_alias,
                "promote_if": spec.publish.promote_if,
            },
        },
    }


def event_message(event: tr_pb.StreamJobEventsResponse) -> tuple[str, str, dict[str, Any] | None]:
    """(level, message, data) of one training event."""
    kind = event.WhichOneof("event")
    e = getattr(event, kind) if kind else None
    if kind == "step":
        data = {
            "step": e.step,
            "total_steps": e.total_steps,
            "train_loss": e.loss,
            "learning_rate": e.learning_rate,
            "epoch": e.epoch,
        }
        return "info", f"Step {e.step}/{e.total_steps}: training loss={e.loss:.4f}", data
    if kind == "queued":
        return "info", f"Job queued at position {e.position}", None
    if kind == "started":
        return "info", f"Fine-tuning job started ({e.total_steps} steps)", None
    if kind == "evaluation":
        metrics = dict(e.metrics)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        return "info", f"Evaluation on {e.split} at step {e.step}: {shown}", metrics
    if kind == "checkpoint":
        return "info", f"Checkpoint saved at step {e.step}", {"step": e.step}
    if kind == "published":
        text = f"Published {e.adapter_ref}"
        if e.promoted_alias:
            text += f"; alias {e.promoted_alias} moved"
        elif e.promotion_skipped_reason:
            text += f"; alias not moved: {e.promotion_skipped_reason}"
        return "info", text, {"fine_tuned_model": e.adapter_ref}
    if kind == "failed":
        return "error", f"Job failed: {e.reason}", None
    if kind == "cancelled":
        return "warn", "Job cancelled", None
    if kind == "succeeded":
        return "info", "The job has successfully completed", None
    if kind == "notice":
        return "info", e.message, None
    return "info", "event", None


def event_object(job_id: str, event: tr_pb.StreamJobEventsResponse) -> dict[str, Any]:
    level, message, data = event_message(event)
    return {
        "id": f"ftevent-{job_id}-{event.sequence}",
        "object": "fine_tuning.job.event",
        "created_at": seconds(event.time) or 0,
        "level": level,
        "message": message,
        "data": data,
        "type": "metrics" if event.WhichOneof("event") == "step" else "message",
    }


def checkpoint_objects(
    job: tr_pb.Job, events: list[tr_pb.StreamJobEventsResponse]
) -> list[dict[str, Any]]:
    """Newest first; a checkpoint's metrics are those of the step it was taken at."""
    losses = {e.step.step: e.step.loss for e in events if e.WhichOneof("event") == "step"}
    found = []
    for event in events:
        if event.WhichOneof("event") != "checkpoint":
            continue
        step = event.checkpoint.step
        found.append(
            {
                "id": f"ftckpt-{job.id}-{step}",
                "object": "fine_tuning.job.checkpoint",
                "created_at": seconds(event.time) or 0,
                "fine_tuning_job_id": job.id,
                "fine_tuned_model_checkpoint": f"{job.id}:step-{step}",
                "step_number": step,
                "metrics": {"step": float(step), "train_loss": losses.get(step)},
            }
        )
    return found[::-1]


# -- vector stores ------------------------------------------------------------------------


def vector_store_object(
    collection: ret_pb.Collection, usage_bytes: int, counts: dict[str, int]
) -> dict[str, Any]:
    created = seconds(collection.created_at) or 0
    file_counts = {k: counts.get(k, 0) for k in ("in_progress", "completed", "failed", "cancelled")}
    file_counts["total"] = sum(counts.values())
    return {
        "id": collection.name,
        "object": "vector_store",
        "created_at": created,
        "name": collection.name,
        "usage_bytes": usage_bytes,
        "file_counts": file_counts,
        "status": "in_progress" if counts.get("in_progress") else "completed",
        "last_active_at": created,
        "metadata": None,
        "expires_after": None,
        "expires_at": None,
        "loraplex": {
            "embedding_model": collection.embedding_model,
            "dimension": collection.dimension,
            "revision": collection.revision,
        },
    }


def vector_store_file_object(item: VectorStoreFile) -> dict[str, Any]:
    error = {"code": "server_error", "message": item.last_error} if item.last_error else None
    return {
        "id": item.file_id,
        "object": "vector_store.file",
        "created_at": int(item.created_at),
        "vector_store_id": item.vector_store,
        "status": item.status,
        "usage_bytes": item.bytes,
        "last_error": error,
        "attributes": item.attributes or None,
        "chunking_strategy": {"type": "other"},
    }


def metadata_filter(spec: Any) -> ret_pb.MetadataFilter | None:
    conditions = filter_conditions(spec)
    if not conditions:
        return None
    return ret_pb.MetadataFilter(
        conditions=[
            ret_pb.MetadataCondition(key=k, equals=v[0])
            if len(v) == 1
            else ret_pb.MetadataCondition(key=k, **{"in": ret_pb.StringList(values=list(v))})
            for k, v in conditions
        ]
    )


def search_page(query: str, reply: ret_pb.SearchChunksResponse) -> dict[str, Any]:
    return {
        "object": "vector_store.search_results.page",
        "search_query": [query],
        "data": [
            {
                "file_id": c.document_id,
                "filename": c.source.title or c.source.uri or c.document_id,
                "score": c.score,
                "attributes": dict(c.metadata),
                "content": [{"type": "text", "text": c.text}],
            }
            for c in reply.chunks
        ],
        "has_more": False,
        "next_page": None,
    }


# -- embeddings ---------------------------------------------------------------------------


def embeddings(reply: ret_pb.EmbedTextsResponse, encoding: str) -> dict[str, Any]:
    import numpy as np

    data = []
    for i, vector in enumerate(reply.embeddings):
        if encoding == "base64":
            raw = np.asarray(vector.values, dtype=np.float32).tobytes()
            value: Any = base64.b64encode(raw).decode()
        else:
            value = list(vector.values)
        data.append({"object": "embedding", "index": i, "embedding": value})
    usage = {"prompt_tokens": reply.tokens, "total_tokens": reply.tokens}
    return {"object": "list", "data": data, "model": reply.embedding_model, "usage": usage}
