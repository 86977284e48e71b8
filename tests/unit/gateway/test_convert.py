"""The gateway's translations: OpenAI job bodies → training's JobSpec, and every object it
returns parsed by the `openai` package's own types."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from openai.types import CreateEmbeddingResponse, FileObject, VectorStore
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint
from openai.types.vector_store_search_response import VectorStoreSearchResponse
from openai.types.vector_stores import VectorStoreFile

from loraplex.retrieval.v1 import retrieval_service_pb2 as ret_pb
from loraplex.training.v1 import training_service_pb2 as tr_pb
from services.common.errors import InvalidArgument
from services.common.openai_json import parse_body
from services.gateway import convert
from services.gateway.fine_tuning import JobBody, _hyperparameters, job_spec
from services.gateway.store import FileRecord, JobExtras
from services.gateway.store import VectorStoreFile as StoreFile

NOW = Timestamp(seconds=1_700_000_000)
HYPER = {"n_epochs": 2, "learning_rate_multiplier": 0.5}


def body(**fields) -> JobBody:
    return parse_body(JobBody, {"model": "tiny", "training_file": "file-1", **fields})


def test_job_spec_from_method_extension_and_seed():
    job = body(
        suffix="support",
        seed=5,
        method={"type": "supervised", "supervised": {"hyperparameters": HYPER}},
        loraplex={"peft_method": "ia3", "lora": {"rank": 4},
                  "hyperparameters": {"max_steps": 3, "checkpoint_interval_steps": 2},
                  "publish": {"promote_alias": "prod", "promote_if": "test_exact_match>=0.8"}},
    )  # fmt: skip
    spec = job_spec("acme", job, _hyperparameters(job), "ds-1", "ds-2")
    assert spec.base_model == "tiny" and spec.method == tr_pb.METHOD_IA3
    assert spec.train[0].dataset_id == "ds-1" and spec.validation_dataset_id == "ds-2"
    hp = spec.hyperparameters
    assert (hp.epochs, hp.max_steps, hp.checkpoint_interval_steps, hp.seed) == (2, 3, 2, 5)
    assert hp.learning_rate == pytest.approx(1e-4) and spec.lora.rank == 4
    assert spec.publish.adapter_name == "acme/support" and spec.publish.promote_alias == "prod"
    deprecated = body(hyperparameters={"batch_size": 4})
    assert (
        job_spec(
            "acme", deprecated, _hyperparameters(deprecated), "d", ""
        ).hyperparameters.batch_size
        == 4
    )


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"method": {"type": "dpo"}}, "only 'supervised'"),
        ({"hyperparameters": {"n_epochs": 0}}, "n_epochs"),
        ({"hyperparameters": {"n_epochs": 1},
          "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}},
         "not both"),
        ({"loraplex": {"peft_method": "magic"}}, "peft_method"),
        ({"loraplex": {"lora": {"rnak": 1}}}, "rnak"),
        ({"suffix": "a b"}, "adapter name"),
    ],
)  # fmt: skip
def test_bad_job_bodies(fields, fragment):
    with pytest.raises(InvalidArgument) as err:
        job = body(**fields)
        job_spec("acme", job, _hyperparameters(job), "d", "")
    assert fragment in err.value.message


def job(state=tr_pb.JOB_STATE_SUCCEEDED, **fields) -> tr_pb.Job:
    message = tr_pb.Job(id="job-1", state=state, adapter_ref="acme/support@1", **fields)
    message.created_at.CopyFrom(NOW)
    message.finished_at.CopyFrom(NOW)
    message.spec.base_model = "tiny"
    message.spec.hyperparameters.epochs = 1
    return message


def test_jobs_events_and_checkpoints_parse_as_openai_types():
    extras = JobExtras("job-1", "tiny", "file-1", "", "support", 5, {"team": "a"}, {})
    parsed = FineTuningJob.model_validate(convert.job_object(job(), extras, "acme"))
    assert parsed.status == "succeeded" and parsed.fine_tuned_model == "acme/support@1"
    assert parsed.metadata == {"team": "a"} and parsed.training_file == "file-1"
    failed = job(tr_pb.JOB_STATE_FAILED, failure_reason="out of memory")
    assert FineTuningJob.model_validate(convert.job_object(failed, None, "acme")).error.message
    step = tr_pb.StreamJobEventsResponse(
        sequence=3, step=tr_pb.StepEvent(step=2, total_steps=3, loss=1.5)
    )
    step.time.CopyFrom(NOW)
    mark = tr_pb.StreamJobEventsResponse(sequence=4, checkpoint=tr_pb.CheckpointEvent(step=2))
    event = FineTuningJobEvent.model_validate(convert.event_object("job-1", step))
    assert event.type == "metrics" and event.data["train_loss"] == 1.5
    (checkpoint,) = convert.checkpoint_objects(job(), [step, mark])
    parsed_checkpoint = FineTuningJobCheckpoint.model_validate(checkpoint)
    assert parsed_checkpoint.step_number == 2 and parsed_checkpoint.metrics.train_loss == 1.5


def test_files_stores_search_and_embeddings_parse_as_openai_types():
    record = FileRecord("file-1", "acme", "fine-tune", "t.jsonl", 10, 1.0, "ds-1")
    assert FileObject.model_validate(convert.file_object(record)).purpose == "fine-tune"
    collection = ret_pb.Collection(name="handbook", embedding_model="m", dimension=3, revision=4)
    collection.created_at.CopyFrom(NOW)
    store = VectorStore.model_validate(
        convert.vector_store_object(collection, 100, {"completed": 2, "failed": 1})
    )
    assert store.id == "handbook" and store.file_counts.total == 3
    item = StoreFile("handbook", "file-1", "completed", 5, 1.0, {"section": "a"})
    assert (
        VectorStoreFile.model_validate(convert.vector_store_file_object(item)).status == "completed"
    )
    hit = ret_pb.ScoredChunk(document_id="file-1", text="t", score=0.5, metadata={"a": "b"},
                             source=ret_pb.Source(title="t.txt"))  # fmt: skip
    page = convert.search_page("q", ret_pb.SearchChunksResponse(chunks=[hit]))
    assert VectorStoreSearchResponse.model_validate(page["data"][0]).filename == "t.txt"
    reply = ret_pb.EmbedTextsResponse(
        embedding_model="m", embeddings=[ret_pb.Embedding(values=[0.6, 0.8])], tokens=3
    )
    assert (
        CreateEmbeddingResponse.model_validate(
            convert.embeddings(reply, "float")
        ).usage.total_tokens
        == 3
    )
    assert isinstance(convert.embeddings(reply, "base64")["data"][0]["embedding"], str)
    assert (
        convert.metadata_filter({"type": "in", "key": "k", "value": ["a", "b"]}).conditions[0].key
        == "k"
    )
