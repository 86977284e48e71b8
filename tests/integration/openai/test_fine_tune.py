"""A whole fine-tune through the OpenAI API: upload, create, follow, then chat with the
`fine_tuned_model` it published, all with the official client on one base URL."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.integration.openai.conftest import BASE_MODEL, jsonl

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
ROWS = [
    {"prompt": f"question: {q}", "completion": a}
    for q, a in [("who approves travel?", "your manager"), ("refund window?", "thirty days")] * 6
]


async def _finished(client: openai.AsyncOpenAI, job_id: str, seconds: float = 600):
    for _ in range(int(seconds * 4)):
        job = await client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.25)
    raise AssertionError(f"job {job_id} did not finish")


async def test_upload_train_follow_then_chat_with_the_fine_tuned_model(suite):
    client = suite.client("acme")
    train = await client.files.create(file=("train.jsonl", jsonl(ROWS)), purpose="fine-tune")
    check = await client.files.create(file=("val.jsonl", jsonl(ROWS[:4])), purpose="fine-tune")
    job = await client.fine_tuning.jobs.create(
        model=BASE_MODEL,
        training_file=train.id,
        validation_file=check.id,
        suffix="support-ft",
        seed=7,
        metadata={"team": "support"},
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}},
        },
        extra_body={
            "loraplex": {
                "lora": {"rank": 4, "alpha": 8},
                "hyperparameters": {"max_steps": 3, "checkpoint_interval_steps": 2},
                "publish": {"promote_alias": "prod"},
            }
        },
    )
    assert job.status in ("queued", "running") and job.training_file == train.id
    assert job.metadata == {"team": "support"} and job.seed == 7
    assert job.hyperparameters.batch_size == 4 and job.user_provided_suffix == "support-ft"
    assert job.id in [j.id async for j in client.fine_tuning.jobs.list()]
    done = await _finished(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == "acme/support-ft@1" and done.finished_at
    events = [e async for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    messages = [e.message for e in events]
    assert messages[0] == "The job has successfully completed", "newest first"
    assert any(m.startswith("Step 3/3") for m in messages) and any(
        "Published" in m for m in messages
    )
    assert any(e.type == "metrics" and e.data["train_loss"] > 0 for e in events)
    page = await client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    checkpoints = [c async for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
    assert [c.step_number for c in checkpoints] == [2]
    models = [m.id async for m in client.models.list()]
    assert "acme/support-ft@prod" in models
    reply = await client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "question: refund window?"}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.model_extra["loraplex"]["adapter"] == "acme/support-ft@1"
    assert reply.usage.completion_tokens > 0


async def test_job_bodies_refused_precisely_and_deprecated_hyperparameters_accepted(suite):
    client = suite.client("acme")
    train = await client.files.create(file=("t.jsonl", jsonl(ROWS)), purpose="fine-tune")
    for method, fragment in [
        ({"type": "dpo"}, "dpo"),
        ({"type": "reinforcement"}, "only 'supervised'"),
    ]:
        with pytest.raises(openai.BadRequestError, match=fragment):
            await client.fine_tuning.jobs.create(
                model=BASE_MODEL, training_file=train.id, method=method
            )
    bad = [
        ({"hyperparameters": {"n_epochs": 0}}, "n_epochs"),
        ({"suffix": "has space"}, "adapter name"),
        ({"extra_body": {"loraplex": {"peft_method": "magic"}}}, "peft_method"),
        ({"extra_body": {"loraplex": {"lora": {"rnak": 4}}}}, "rnak"),
    ]
    for extra, fragment in bad:
        body = {"model": BASE_MODEL, "training_file": train.id, **extra}
        with pytest.raises(openai.BadRequestError) as err:
            await client.fine_tuning.jobs.create(**body)
        assert fragment in err.value.message, err.value.message
    with pytest.raises(openai.NotFoundError):
        await client.fine_tuning.jobs.create(model=BASE_MODEL, training_file="file-absent")
    with pytest.raises(openai.NotFoundError):
        await client.fine_tuning.jobs.create(model="no/such-model", training_file=train.id)
    job = await client.fine_tuning.jobs.create(
        model=BASE_MODEL,
        training_file=train.id,
        hyperparameters={"n_epochs": 2, "batch_size": 2},
        extra_body={"loraplex": {"hyperparameters": {"max_steps": 100_000}}},  # still running
    )
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 2
    cancelled = await client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status in ("cancelled", "running", "queued")
    assert (await _finished(client, job.id)).status == "cancelled"
