"""A real training server on loopback: jobs run in worker processes on a tiny model."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest

from loraplex.training.v1 import training_service_pb2 as pb
from services.common.testing import running_server
from services.training.app import TrainingApp
from tests.integration.training.conftest import (
    ACME,
    MemoryPublisher,
    collect_events,
    settings_for,
    stub,
    toy_spec,
    upload,
    wait_for,
)
from tests.unit.training.tiny_model import FRUITS, toy_rows

pytestmark = pytest.mark.integration


def _kinds(events) -> list[str]:
    return [e.WhichOneof("event") for e in events]


async def test_lora_job_trains_evaluates_and_publishes(tmp_path, models_dir):
    publisher = MemoryPublisher()
    app = TrainingApp(settings_for(tmp_path, models_dir), publisher=publisher)
    async with running_server(app.settings, app) as srv:
        dataset = await upload(srv.channel, toy_rows(4), "colors")
        assert dataset.rows == 32 and len(dataset.sha256) == 64
        spec = toy_spec(dataset.id)
        spec.publish.CopyFrom(
            pb.PublishConfig(
                adapter_name="acme/colors", promote_alias="prod", promote_if="test_loss<100"
            )
        )
        job = (await stub(srv.channel).CreateJob(pb.CreateJobRequest(spec=spec), metadata=ACME)).job
        assert job.state == pb.JOB_STATE_QUEUED and job.queue_position == 1
        events = await collect_events(srv.channel, job.id)
        kinds = _kinds(events)
        assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "succeeded"
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        steps = [e.step for e in events if e.WhichOneof("event") == "step"]
        assert len(steps) == events[1].started.total_steps
        first, last = steps[0].loss, sum(s.loss for s in steps[-5:]) / 5
        assert last < first / 2, (first, last)
        assert steps[-1].tokens_per_second > 0 and steps[-1].eta_seconds == 0
        splits = {e.evaluation.split for e in events if e.WhichOneof("event") == "evaluation"}
        assert splits == {"validation", "test", "general"}
        published = next(e.published for e in events if e.WhichOneof("event") == "published")
        assert published.adapter_ref == "acme/colors@1" and published.promoted_alias == "prod"

        final = (await stub(srv.channel).GetJob(pb.GetJobRequest(id=job.id), metadata=ACME)).job
        assert final.state == pb.JOB_STATE_SUCCEEDED and final.adapter_ref == "acme/colors@1"
        for key in (
            "test_loss",
            "test_perplexity",
            "test_exact_match",
            "validation_loss",
            "general_perplexity_before",
            "general_perplexity_after",
        ):
            assert key in final.metrics, key
        # A reconnecting client gets the rest of the history from where it stopped.
        tail = await collect_events(srv.channel, job.id, after=events[-3].sequence)
        assert [e.sequence for e in tail] == [e.sequence for e in events[-2:]]

    pushed = publisher.pushed[0]
    assert pushed["tenant"] == "acme" and pushed["name"] == "acme/colors"
    assert sorted(p.name for p in pushed["folder"].iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    lineage = pushed["lineage"]
    assert lineage["dataset_sha256"] == dataset.sha256
    assert lineage["method"] == "lora" and len(lineage["base_model_sha256"]) == 64
    assert json.loads(lineage["hyperparameters"])["learning_rate"] == 1e-2
    assert pushed["metrics"]["test_loss"] == final.metrics["test_loss"]
    assert publisher.aliases == {("acme/colors", "prod"): 1}
    config = json.loads((pushed["folder"] / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny"
    assert _greedy_hits(models_dir / "tiny", pushed["folder"]) > _greedy_hits(models_dir / "tiny")


def _greedy_hits(base, adapter=None) -> int:
    """How many of the eight taught answers greedy decoding gives."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.training.evaluation import greedy_answer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    rows = toy_rows(1)
    return sum(greedy_answer(model, tokenizer, r, 3).strip() == r["completion"] for r in rows)


async def test_queue_positions_and_cancel_stop_quickly(tmp_path, models_dir):
    app = TrainingApp(settings_for(tmp_path, models_dir), publisher=MemoryPublisher())
    async with running_server(app.settings, app) as srv:
        dataset = await upload(srv.channel, toy_rows(4), "colors")
        api = stub(srv.channel)
        long = toy_spec(dataset.id, max_steps=1_000_000, eval_interval_steps=1_000_000)
        first = (await api.CreateJob(pb.CreateJobRequest(spec=long), metadata=ACME)).job
        await wait_for(srv.channel, first.id, "step")
        # One worker: the others queue behind the running job.
        second = (await api.CreateJob(pb.CreateJobRequest(spec=long), metadata=ACME)).job
        third = (await api.CreateJob(pb.CreateJobRequest(spec=long), metadata=ACME)).job
        assert (second.queue_position, third.queue_position) == (1, 2)
        queued_event = (await wait_for(srv.channel, third.id, "queued")).queued
        assert queued_event.position == 2
        cancelled = (await api.CancelJob(pb.CancelJobRequest(id=second.id), metadata=ACME)).job
        assert cancelled.state == pb.JOB_STATE_CANCELLED
        moved_up = (await api.GetJob(pb.GetJobRequest(id=third.id), metadata=ACME)).job
        assert moved_up.queue_position == 1
        await api.CancelJob(pb.CancelJobRequest(id=third.id), metadata=ACME)

        started = time.monotonic()
        await api.CancelJob(pb.CancelJobRequest(id=first.id), metadata=ACME)
        events = await collect_events(srv.channel, first.id, deadline=30)
        assert _kinds(events)[-1] == "cancelled"
        assert time.monotonic() - started < 10
        job = (await api.GetJob(pb.GetJobRequest(id=first.id), metadata=ACME)).job
        assert job.state == pb.JOB_STATE_CANCELLED and 0 < job.step < 1_000_000

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await api.CancelJob(pb.CancelJobRequest(id=first.id), metadata=ACME)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_restarted_service_resumes_from_checkpoint(tmp_path, models_dir):
    settings = settings_for(tmp_path, models_dir)
    app = TrainingApp(settings, publisher=MemoryPublisher())
    async with running_server(settings, app) as srv:
        dataset = await upload(srv.channel, toy_rows(4), "colors")
        spec = toy_spec(dataset.id, max_steps=60, checkpoint_interval_steps=10)
        job = (await stub(srv.channel).CreateJob(pb.CreateJobRequest(spec=spec), metadata=ACME)).job
        await wait_for(srv.channel, job.id, "checkpoint")
    # The server stopped: the worker checkpointed and exited, the job was handed back.
    app = TrainingApp(settings, publisher=MemoryPublisher())
    async with running_server(settings, app) as srv:
        events = await collect_events(srv.channel, job.id, deadline=600)
        starts = [e.started for e in events if e.WhichOneof("event") == "started"]
        assert len(starts) == 2 and starts[1].resumed_from_step > 0
        assert _kinds(events)[-1] == "succeeded"
        final = (await stub(srv.channel).GetJob(pb.GetJobRequest(id=job.id), metadata=ACME)).job
        assert final.attempts == 2 and final.step == 60


async def test_failures_are_refused_up_front_or_reported_with_a_reason(tmp_path, models_dir):
    app = TrainingApp(settings_for(tmp_path, models_dir), publisher=MemoryPublisher())
    async with running_server(app.settings, app) as srv:
        api = stub(srv.channel)
        dataset = await upload(srv.channel, toy_rows(2), "colors")
        text = await upload(srv.channel, [{"text": "the apple is red"}] * 4, "raw")

        async def refused(spec: pb.JobSpec) -> grpc.aio.AioRpcError:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await api.CreateJob(pb.CreateJobRequest(spec=spec), metadata=ACME)
            return err.value

        qlora = toy_spec(dataset.id)
        qlora.method = pb.METHOD_QLORA
        err = await refused(qlora)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "bitsandbytes" in err.details()
        err = await refused(toy_spec(text.id))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "text rows" in err.details()
        missing = toy_spec(dataset.id)
        missing.base_model = "nope"
        assert (await refused(missing)).code() == grpc.StatusCode.NOT_FOUND
        gate = toy_spec(dataset.id)
        gate.publish.CopyFrom(
            pb.PublishConfig(
                adapter_name="acme/x", promote_alias="p", promote_if="__import__('os')"
            )
        )
        assert (await refused(gate)).code() == grpc.StatusCode.INVALID_ARGUMENT
        other = toy_spec(dataset.id)
        other.publish.adapter_name = "globex/x"
        assert (await refused(other)).code() == grpc.StatusCode.INVALID_ARGUMENT

        # Prompts fill the whole window: no answer token survives truncation.
        short = toy_spec(dataset.id, max_seq_length=8)
        job = (await api.CreateJob(pb.CreateJobRequest(spec=short), metadata=ACME)).job
        events = await collect_events(srv.channel, job.id)
        assert _kinds(events)[-1] == "failed"
        assert "raise max_seq_length" in events[-1].failed.reason
        final = (await api.GetJob(pb.GetJobRequest(id=job.id), metadata=ACME)).job
        assert (
            final.state == pb.JOB_STATE_FAILED and final.failure_reason == events[-1].failed.reason
        )
        assert FRUITS  # the toy data is the one the tokenizer was trained on
        await asyncio.sleep(0)
