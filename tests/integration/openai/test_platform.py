"""Files, vector stores and embeddings through the gateway with the official client, and
every route refusing another tenant with the 404 an absent thing gets."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import openai
import pytest

from services.common.testing import TEST_TENANT_KEYS
from tests.integration.openai.conftest import handbook_store, jsonl

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
ROWS = [{"prompt": "question: refund window?", "completion": "thirty days"}] * 4


async def test_embeddings_float_and_base64(gateway_only):
    client = gateway_only.client("acme")
    reply = await client.embeddings.create(
        model="all-MiniLM-L6-v2", input=["refund policy", "badge rules"]
    )
    first, second = (np.array(d.embedding) for d in reply.data)
    assert len(first) == 384 and abs(np.linalg.norm(first) - 1) < 1e-3
    assert reply.usage.prompt_tokens > 4 and reply.model == "all-MiniLM-L6-v2"
    one = await client.embeddings.create(
        model="all-MiniLM-L6-v2", input="refund policy", encoding_format="float"
    )
    assert np.allclose(one.data[0].embedding, first, atol=1e-5)
    raw = await suite_http(gateway_only).post(
        "/embeddings",
        json={"model": "all-MiniLM-L6-v2", "input": "refund policy", "encoding_format": "base64"},
    )
    decoded = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), np.float32)
    assert np.allclose(decoded, first, atol=1e-5) and not np.allclose(first, second)
    with pytest.raises(openai.BadRequestError, match="unknown embedding model"):
        await client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError, match="token ids"):
        await client.embeddings.create(model="all-MiniLM-L6-v2", input=[[1, 2, 3]])


async def test_files_upload_list_get_delete(gateway_only):
    client = gateway_only.client("acme")
    tune = await client.files.create(file=("train.jsonl", jsonl(ROWS)), purpose="fine-tune")
    text = await client.files.create(file=("notes.txt", b"hello"), purpose="assistants")
    assert (
        tune.purpose == "fine-tune"
        and tune.bytes == len(jsonl(ROWS))
        and tune.filename == "train.jsonl"
    )
    listed = [f.id async for f in client.files.list()]
    assert listed[:2] == [text.id, tune.id], "newest first"
    assert [f.id async for f in client.files.list(purpose="fine-tune")] == [tune.id]
    assert (await client.files.retrieve(tune.id)).id == tune.id
    assert (await client.files.content(text.id)).content == b"hello"
    assert (await client.files.delete(text.id)).deleted
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(text.id)
    # Training validates fine-tune rows; a bad file is refused and nothing is stored.
    with pytest.raises(openai.BadRequestError, match="line 1"):
        await client.files.create(file=("bad.jsonl", b'{"nope": 1}\n'), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="purpose"):
        await client.files.create(file=("x.bin", b"x"), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="UTF-8"):
        await client.files.create(file=("x.pdf", b"\xff\xfe\x00"), purpose="assistants")
    too_big = await suite_http(gateway_only).post(
        "/files",
        files={"file": ("big.txt", b"x" * (2 * 1024 * 1024))},
        data={"purpose": "assistants"},
    )
    assert too_big.status_code == 413 and too_big.json()["error"]["message"]
    assert [f.id async for f in client.files.list()] == [tune.id]


async def test_vector_store_create_upload_search_delete(gateway_only):
    client = gateway_only.client("acme")
    store_id = await handbook_store(client, "policies")
    store = await client.vector_stores.retrieve(store_id)
    assert store.file_counts.completed == 3 and store.file_counts.total == 3
    assert store_id in [s.id async for s in client.vector_stores.list()]
    files = [f async for f in client.vector_stores.files.list(store_id)]
    assert len(files) == 3 and all(f.status == "completed" for f in files)
    page = await client.vector_stores.search(
        store_id, query="who approves trips abroad", max_num_results=2
    )
    hits = list(page.data)
    assert hits[0].filename == "travel.md" and hits[0].attributes == {"section": "travel"}
    assert "approval" in hits[0].content[0].text and len(hits) == 2
    filtered = await client.vector_stores.search(
        store_id, query="who approves trips abroad",
        filters={"type": "eq", "key": "section", "value": "security"},
    )  # fmt: skip
    assert [h.filename for h in filtered.data] == ["security.md"]
    strict = await client.vector_stores.search(
        store_id, query="who approves trips abroad", ranking_options={"score_threshold": 0.99}
    )
    assert list(strict.data) == []
    travel = hits[0].file_id
    assert (await client.vector_stores.files.delete(travel, vector_store_id=store_id)).deleted
    after = await client.vector_stores.search(store_id, query="who approves trips abroad")
    assert travel not in {h.file_id for h in after.data}
    with pytest.raises(openai.BadRequestError, match="filter"):
        await client.vector_stores.search(
            store_id, query="x", filters={"type": "gt", "key": "a", "value": 1}
        )
    assert (await client.vector_stores.delete(store_id)).deleted
    with pytest.raises(openai.NotFoundError):
        await client.vector_stores.retrieve(store_id)


def suite_http(suite, tenant: str = "acme") -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {TEST_TENANT_KEYS[tenant]}"}
    return httpx.AsyncClient(base_url=suite.base_url, headers=headers, timeout=60)


async def test_health_is_public_and_models_need_an_inference_url(gateway_only):
    async with httpx.AsyncClient(base_url=gateway_only.gateway.http_url("openai_port")) as http:
        assert (await http.get("/health")).status_code == 200
    with pytest.raises(openai.NotFoundError):
        await gateway_only.client().models.list()


async def test_another_tenants_things_answer_404_like_absent_ones(gateway_only):
    acme = gateway_only.client("acme")
    store_id = await handbook_store(acme, "private")
    file_id = (await acme.files.create(file=("t.jsonl", jsonl(ROWS)), purpose="fine-tune")).id
    job = await acme.fine_tuning.jobs.create(
        model="tiny", training_file=file_id,
        extra_body={"loraplex": {"hyperparameters": {"max_steps": 1}}},
    )  # fmt: skip
    store_file = next(iter([f.id async for f in acme.vector_stores.files.list(store_id)]))
    globex = suite_http(gateway_only, "globex")
    routes = [
        ("GET", f"/files/{file_id}", None),
        ("DELETE", f"/files/{file_id}", None),
        ("GET", f"/files/{file_id}/content", None),
        ("GET", f"/vector_stores/{store_id}", None),
        ("DELETE", f"/vector_stores/{store_id}", None),
        ("GET", f"/vector_stores/{store_id}/files", None),
        ("POST", f"/vector_stores/{store_id}/files", {"file_id": store_file}),
        ("GET", f"/vector_stores/{store_id}/files/{store_file}", None),
        ("DELETE", f"/vector_stores/{store_id}/files/{store_file}", None),
        ("POST", f"/vector_stores/{store_id}/search", {"query": "travel"}),
        ("GET", f"/fine_tuning/jobs/{job.id}", None),
        ("POST", f"/fine_tuning/jobs/{job.id}/cancel", None),
        ("GET", f"/fine_tuning/jobs/{job.id}/events", None),
        ("GET", f"/fine_tuning/jobs/{job.id}/checkpoints", None),
        ("POST", "/fine_tuning/jobs", {"model": "tiny", "training_file": file_id}),
        ("POST", "/embeddings", None),  # no tenant data: 400 for both, never a leak
    ]  # fmt: skip
    for method, path, body in routes:
        theirs = await globex.request(method, path, json=body)
        absent = await globex.request(method, _absent(path), json=_absent_body(body))
        expected = 400 if path == "/embeddings" else 404
        assert theirs.status_code == absent.status_code == expected, (method, path, theirs.text)
        assert theirs.json()["error"]["type"] == absent.json()["error"]["type"]
    assert [f.id async for f in gateway_only.client("globex").files.list()] == []
    assert store_id not in [s.id async for s in gateway_only.client("globex").vector_stores.list()]
    assert [j.id async for j in gateway_only.client("globex").fine_tuning.jobs.list()] == []
    # Nothing of acme's changed.
    assert (await acme.vector_stores.retrieve(store_id)).file_counts.completed == 3
    assert (await acme.files.retrieve(file_id)).id == file_id
    await acme.fine_tuning.jobs.cancel(job.id)


def _absent(path: str) -> str:
    for known in ("file-", "private"):
        path = path.replace(known, f"{known}zz")
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "fine_tuning":
        parts[3] = "job-00000000000000000000"
    return "/".join(parts)


def _absent_body(body: dict | None) -> dict | None:
    if body is None:
        return None
    text = json.dumps(body)
    for known in ("file-", "private"):
        text = text.replace(known, f"{known}zz")
    return json.loads(text)
