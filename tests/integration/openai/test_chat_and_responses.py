"""Models, chat, completions and responses through the one base URL, with the official
client: adapters by reference, streaming, RAG citations, `file_search`, errors, tenancy,
and a client that leaves mid-stream."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import openai
import pytest
import pytest_asyncio

from services.common.testing import TEST_TENANT_KEYS
from tests.integration.inference.helpers import push_adapter
from tests.integration.openai.conftest import BASE_MODEL, handbook_store
from tests.tiny_llm import make_random_lora

TRAVEL_OR_REFUNDS = {"section": ["travel", "refunds"]}
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


class _Pusher:
    """What helpers.push_adapter needs of a suite: the registry stub."""

    def __init__(self, suite) -> None:
        from loraplex.registry.v1 import registry_service_pb2_grpc as reg_grpc

        self.registry_stub = reg_grpc.RegistryServiceStub(suite.registry.channel)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def adapter(suite, engine, tmp_path_factory) -> str:
    folder = make_random_lora(
        tmp_path_factory.mktemp("lora") / "support", engine.model_dir, seed=3,
        base_model_name=BASE_MODEL,
    )  # fmt: skip
    await push_adapter(_Pusher(suite), "acme", "acme/support", folder, aliases=["prod"])
    return "acme/support@prod"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def handbook(suite) -> str:
    return await handbook_store(suite.client("acme"))


async def test_models_list_base_and_own_adapters_with_parent(suite, adapter):
    client = suite.client("acme")
    models = {m.id: m async for m in client.models.list()}
    assert {BASE_MODEL, "acme/support", "acme/support@1", "acme/support@prod"} <= set(models)
    assert models["acme/support@prod"].model_extra["parent"] == BASE_MODEL
    assert (await client.models.retrieve("acme/support@1")).id == "acme/support@1"
    assert (await client.models.retrieve(BASE_MODEL)).owned_by == "loraplex"
    others = [m.id async for m in suite.client("globex").models.list()]
    assert others == [BASE_MODEL], "another tenant's adapters are not listed"
    with pytest.raises(openai.NotFoundError):
        await suite.client("globex").models.retrieve("acme/support@prod")


async def test_chat_with_an_adapter_unary_and_streamed_agree(suite, adapter):
    client = suite.client("acme")
    messages = [{"role": "user", "content": "question: who approves travel?"}]
    unary = await client.chat.completions.create(
        model=adapter, messages=messages, max_tokens=12, temperature=0, seed=1
    )
    assert unary.model == adapter and unary.choices[0].message.role == "assistant"
    assert unary.usage.completion_tokens > 0 and unary.usage.prompt_tokens > 0
    assert unary.model_extra["loraplex"]["adapter"] == "acme/support@1"
    stream = await client.chat.completions.create(
        model=adapter, messages=messages, max_tokens=12, temperature=0, seed=1, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == unary.choices[0].message.content
    finish = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert finish.model_extra["loraplex"]["adapter"] == "acme/support@1"
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == unary.usage.completion_tokens
    )
    base = await client.chat.completions.create(
        model=BASE_MODEL, messages=messages, max_tokens=12, temperature=0
    )
    assert base.model_extra["loraplex"]["adapter"] is None


async def test_chat_with_rag_returns_checked_citations(suite, adapter, handbook):
    client = suite.client("acme")
    reply = await client.chat.completions.create(
        model=adapter,
        messages=[{"role": "user", "content": "Who approves trips abroad?"}],
        max_tokens=16,
        temperature=0,
        extra_body={"loraplex": {"collection": handbook, "top_k": 2, "filter": TRAVEL_OR_REFUNDS}},
    )  # fmt: skip
    ext = reply.model_extra["loraplex"]
    assert ext["collection"] == handbook and ext["collection_revision"] >= 3
    assert isinstance(ext["grounded"], bool) and ext["citations"]
    titles = {c["source"]["title"] for c in ext["citations"]}
    assert "travel.md" in titles and "security.md" not in titles, "the filter held"
    assert all(0 <= c["support"] <= 1 and c["text"] for c in ext["citations"])
    stream = await client.chat.completions.create(
        model=adapter,
        messages=[{"role": "user", "content": "Who approves trips abroad?"}],
        max_tokens=16, temperature=0, stream=True,
        extra_body={"loraplex": {"collection": handbook, "top_k": 2, "abstain": "refuse"}},
    )  # fmt: skip
    last = [c async for c in stream][-1]
    assert last.choices[0].finish_reason and last.model_extra["loraplex"]["citations"]


async def test_completions_plain_and_streamed(suite):
    client = suite.client("acme")
    prompt = "the quick brown fox"
    reply = await client.completions.create(
        model=BASE_MODEL, prompt=prompt, max_tokens=16, temperature=0
    )
    assert reply.object == "text_completion" and reply.usage.completion_tokens > 0
    stream = await client.completions.create(
        model=BASE_MODEL, prompt=prompt, max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == reply.choices[0].text
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


async def test_responses_with_file_search_annotate_file_citations(suite, adapter, handbook):
    client = suite.client("acme")
    response = await client.responses.create(
        model=adapter,
        input="Who approves trips abroad?",
        tools=[{"type": "file_search", "vector_store_ids": [handbook], "max_num_results": 2}],
        max_output_tokens=16,
        temperature=0,
        store=False,
    )
    search = next(o for o in response.output if o.type == "file_search_call")
    message = next(o for o in response.output if o.type == "message")
    assert search.status == "completed" and response.usage.output_tokens > 0
    text = message.content[0].text
    assert text == response.output_text
    for note in message.content[0].annotations:
        assert note.type == "file_citation" and note.file_id.startswith("file-")
        assert text[note.index] == "["
    cited = response.model_extra["loraplex"]["citations"]
    assert cited and {c["document_id"] for c in cited} <= {
        f.id async for f in client.vector_stores.files.list(handbook)
    }
    stream = await client.responses.create(
        model=adapter, input="Who approves trips abroad?", max_output_tokens=16, temperature=0,
        tools=[{"type": "file_search", "vector_store_ids": [handbook]}], stream=True,
    )  # fmt: skip
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    for kind in ("output_item.added", "content_part.added", "output_text.done", "output_item.done"):
        assert f"response.{kind}" in kinds, kinds
    # At max_output_tokens the response ends `incomplete`, as OpenAI's does.
    assert kinds[-1] in ("response.completed", "response.incomplete")
    final = events[-1].response
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.status == kinds[-1].split(".")[1] and final.model_extra["loraplex"]["citations"]
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    assert deltas == final.model_extra["loraplex"]["generated_text"]


HI = [{"role": "user", "content": "x"}]
NO_STORE = {"loraplex": {"collection": "nope"}}
BAD = [
    ("chat", {"model": "gpt-4o", "messages": HI}, 404, "does not exist"),
    ("chat", {"model": "globex/bot", "messages": HI}, 404, "not found"),
    ("chat", {"model": BASE_MODEL, "messages": []}, 400, "messages"),
    ("chat", {"model": BASE_MODEL, "messages": HI, "n": 2}, 400, "n: only one"),
    ("chat", {"model": BASE_MODEL, "messages": HI, "max_tokens": 100_000}, 400, "max_tokens"),
    ("chat", {"model": BASE_MODEL, "messages": HI, "temperature": 9}, 400, "temperature"),
    ("chat", {"model": BASE_MODEL, "messages": HI, "extra_body": NO_STORE}, 404, "nope"),
    ("responses", {"model": BASE_MODEL, "input": "x", "store": True}, 400, "stateless"),
    ("completions", {"model": BASE_MODEL, "prompt": [1, 2, 3]}, 400, "one text prompt"),
]  # fmt: skip


@pytest.mark.parametrize(("route", "body", "status", "fragment"), BAD)
async def test_bad_requests_get_openai_errors(suite, route, body, status, fragment):
    client = suite.client("acme")
    create = {
        "chat": client.chat.completions.create,
        "responses": client.responses.create,
        "completions": client.completions.create,
    }[route]
    with pytest.raises(openai.APIStatusError) as err:
        await create(**body)
    assert err.value.status_code == status
    error = err.value.body
    assert set(error) >= {"message", "type", "code"} and fragment in error["message"], error


async def test_inference_routes_answer_another_tenants_things_like_absent_ones(
    suite, adapter, handbook
):
    headers = {"authorization": f"Bearer {TEST_TENANT_KEYS['globex']}"}
    async with httpx.AsyncClient(base_url=suite.base_url, headers=headers, timeout=60) as globex:
        hi = [{"role": "user", "content": "x"}]
        for name in (handbook, "absent-store"):
            chat = {"model": BASE_MODEL, "messages": hi, "loraplex": {"collection": name}}
            search = [{"type": "file_search", "vector_store_ids": [name]}]
            answers = [
                await globex.post("/chat/completions", json=chat),
                await globex.post("/completions", json={**chat, "prompt": "x"}),
                await globex.post(
                    "/responses", json={"model": BASE_MODEL, "input": "x", "tools": search}
                ),
            ]
            assert [a.status_code for a in answers] == [404] * 3, [a.text for a in answers]
        for model in (adapter, "acme/absent@prod"):
            answers = [
                await globex.get(f"/models/{model}"),
                await globex.post("/chat/completions", json={"model": model, "messages": hi}),
                await globex.post("/responses", json={"model": model, "input": "x"}),
            ]
            assert [a.status_code for a in answers] == [404] * 3, [a.text for a in answers]
            assert all(a.json()["error"]["type"] == "invalid_request_error" for a in answers)


async def test_raw_http_errors_keys_and_sizes(suite):
    async with httpx.AsyncClient(base_url=suite.base_url, timeout=30) as http:
        acme = {"authorization": f"Bearer {TEST_TENANT_KEYS['acme']}"}
        bad_json = await http.post("/chat/completions", content=b"{not json", headers=acme)
        assert (
            bad_json.status_code == 400
            and bad_json.json()["error"]["type"] == "invalid_request_error"
        )
        no_key = await http.get("/models")
        assert no_key.status_code == 401 and "error" in no_key.json()
        bad_key = await http.get("/models", headers={"authorization": "Bearer lpx_nope"})
        assert bad_key.status_code == 401
        huge = await http.post("/chat/completions", content=b"x" * (5 * 1024 * 1024), headers=acme)
        assert huge.status_code == 413


async def test_a_client_leaving_mid_stream_aborts_the_engine_request(suite):
    engine = suite.inference_app.engine
    admission = suite.inference_app.core.admission
    for base_url in (suite.inference_url, suite.base_url):  # direct, and through the gateway
        client = suite.client("acme", base_url=base_url)
        stream = await client.chat.completions.create(
            model=BASE_MODEL, messages=[{"role": "user", "content": "hello world"}],
            max_tokens=250, temperature=1, stream=True,
        )  # fmt: skip
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break  # tokens are flowing: the request runs in the engine
        assert engine._llm.get_num_unfinished_requests() >= 1
        await stream.close()
        for _ in range(200):
            if engine._llm.get_num_unfinished_requests() == 0 and admission.pending == 0:
                break
            await asyncio.sleep(0.05)
        assert engine._llm.get_num_unfinished_requests() == 0, f"aborted ({base_url})"
        assert admission.pending == 0
    # Not streamed: a client that gives up while the engine runs its request stops it too.
    headers = {"authorization": f"Bearer {TEST_TENANT_KEYS['acme']}"}
    body = {"model": BASE_MODEL, "prompt": "hello world", "max_tokens": 250, "temperature": 1}
    for base_url in (suite.inference_url, suite.base_url):
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:
            call = asyncio.ensure_future(http.post("/completions", json=body))
            for _ in range(400):
                if engine._llm.get_num_unfinished_requests() >= 1 or call.done():
                    break
                await asyncio.sleep(0.005)
            running = engine._llm.get_num_unfinished_requests() >= 1
            call.cancel()  # closes the connection
            with contextlib.suppress(asyncio.CancelledError):
                await call
        for _ in range(200):
            if engine._llm.get_num_unfinished_requests() == 0 and admission.pending == 0:
                break
            await asyncio.sleep(0.05)
        assert running and engine._llm.get_num_unfinished_requests() == 0, base_url
        assert admission.pending == 0
