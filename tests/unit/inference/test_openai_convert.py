"""OpenAI bodies → core requests, and results → JSON the `openai` package's types accept."""

from __future__ import annotations

import json

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response

from services.common.errors import InvalidArgument, NotFound
from services.common.openai_json import filter_conditions
from services.inference.generation import CitationRecord, GenerationResult
from services.inference.grounding import AbstainPolicy, Refusal
from services.inference.openai_convert import chat_request, completion_request
from services.inference.openai_render import ChatChunks, chat_completion, completion
from services.inference.openai_responses import ResponseRender, responses_request
from services.inference.records import RetrievedChunk

BASE = "loraplex/tiny"


def chat(**fields):
    return {"model": BASE, "messages": [{"role": "user", "content": "hi"}], **fields}


def test_chat_maps_model_sampling_and_messages():
    parsed = chat_request(
        chat(
            model="acme/support@prod",
            messages=[
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "refund window?"}]},
            ],
            max_completion_tokens=9,
            max_tokens=50,
            temperature=0.2,
            top_p=0.5,
            stop="\n",
            seed=3,
            stream=True,
            stream_options={"include_usage": True},
        ),
        BASE,
    )
    r = parsed.request
    assert str(r.adapter) == "acme/support@prod" and parsed.stream and parsed.include_usage
    assert r.messages == [("system", "be brief"), ("user", "refund window?")]
    assert (r.max_tokens, r.temperature, r.top_p, r.stop, r.seed) == (9, 0.2, 0.5, ["\n"], 3)
    base = chat_request(chat(), BASE).request
    assert base.adapter is None and base.temperature == 1.0, "OpenAI's default temperature"


def test_rag_extension_and_filters():
    body = chat(
        loraplex={
            "collection": "handbook",
            "top_k": 3,
            "filter": {"type": "eq", "key": "section", "value": "travel"},
            "abstain": "refuse",
        }
    )
    rag = chat_request(body, BASE).request.rag
    assert rag.collection == "handbook" and rag.top_k == 3 and rag.abstain is AbstainPolicy.REFUSE
    assert rag.filter.conditions[0].key == "section"
    assert filter_conditions({"section": ["a", "b"], "lang": "en"}) == (
        ("section", ("a", "b")),
        ("lang", ("en",)),
    )
    compound = {"type": "and", "filters": [{"type": "in", "key": "k", "value": [1, True]}]}
    assert filter_conditions(compound) == (("k", ("1", "true")),)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (chat(n=2), "n: only one choice"),
        (chat(messages=[]), "messages"),
        (chat(messages=[{"role": "tool", "content": "x"}]), "messages.0.role"),
        (chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), "text parts"),
        (chat(temperature="hot"), "temperature"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(tools=[{"type": "function"}]), "function calling"),
        (chat(logprobs=True), "logprobs"),
        (chat(loraplex={"collection": "c", "bogus": 1}), "loraplex.bogus"),
        (chat(loraplex={"collection": "c", "filter": {"type": "gt", "key": "a"}}), "filter"),
        (chat(loraplex={"collection": "c", "abstain": "maybe"}), "abstain"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_chat_bodies_name_the_field(body, fragment):
    with pytest.raises(InvalidArgument) as err:
        chat_request(body, BASE)
    assert fragment in err.value.message


def test_unknown_model_is_not_found_and_completions_take_one_text_prompt():
    with pytest.raises(NotFound):
        chat_request(chat(model="gpt-4o"), BASE)
    parsed = completion_request({"model": BASE, "prompt": ["the quick"]}, BASE)
    assert parsed.request.prompt == "the quick" and parsed.request.use_chat_template is False
    with pytest.raises(InvalidArgument, match="one text prompt"):
        completion_request({"model": BASE, "prompt": ["a", "b"]}, BASE)


def grounded_result() -> GenerationResult:
    chunk = RetrievedChunk("travel", "Trips need approval.", score=0.8, source_title="Travel")
    return GenerationResult(
        text="Ask your manager [1].",
        finish_reason="stop",
        prompt_tokens=20,
        completion_tokens=6,
        citations=[CitationRecord(1, True, chunk, support=0.9, supported=True)],
        adapter_ref="acme/support@3",
        collection="handbook",
        collection_revision=7,
        grounded=True,
        refusal=Refusal.NONE,
        generated_text="Ask your manager [1].",
    )


def test_results_parse_as_the_openai_types():
    result = grounded_result()
    unary = ChatCompletion.model_validate(chat_completion("chatcmpl-1", "acme/support", result))
    assert unary.choices[0].message.content == result.text and unary.usage.total_tokens == 26
    ext = unary.model_extra["loraplex"]
    assert ext["adapter"] == "acme/support@3" and ext["collection_revision"] == 7
    assert ext["grounded"] and ext["citations"][0]["document_id"] == "travel"
    chunks = ChatChunks("chatcmpl-1", "acme/support")
    frames = [chunks.role(), chunks.delta("Ask"), chunks.finish(result), chunks.usage(result)]
    parsed = [ChatCompletionChunk.model_validate(json.loads(f[6:])) for f in frames]
    assert parsed[2].choices[0].finish_reason == "stop" and parsed[2].model_extra["loraplex"]
    assert parsed[3].choices == [] and parsed[3].usage.completion_tokens == 6
    assert Completion.model_validate(completion("cmpl-1", BASE, result)).choices[0].text


def test_responses_with_file_search_give_file_citations():
    call = responses_request(
        {
            "model": BASE,
            "input": "who approves travel?",
            "instructions": "cite sources",
            "tools": [{"type": "file_search", "vector_store_ids": ["handbook"]}],
        },
        BASE,
    )
    assert call.request.rag.collection == "handbook"
    assert call.request.messages == [("system", "cite sources"), ("user", "who approves travel?")]
    render = ResponseRender(call)
    response = Response.model_validate(render.response("completed", grounded_result()))
    search, message = response.output
    assert search.type == "file_search_call" and message.type == "message"
    note = message.content[0].annotations[0]
    assert note.type == "file_citation" and note.file_id == "travel"
    assert note.index == grounded_result().text.index("[1]")
    events = [*render.opening(), render.delta("Ask"), *render.closing(grounded_result())]
    kinds = [e.split(b"\n", 1)[0].decode() for e in events]
    assert kinds[0] == "event: response.created" and kinds[-1] == "event: response.completed"
    assert "event: response.output_text.annotation.added" in kinds
    numbers = [json.loads(e.split(b"data: ", 1)[1])["sequence_number"] for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"store": True}, "stateless"),
        ({"previous_response_id": "resp_1"}, "not stored"),
        ({"tools": [{"type": "web_search"}]}, "only the file_search"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["a", "b"]}]}, "exactly one"),
        ({"input": [{"type": "function_call_output"}]}, "input.0"),
    ],
)
def test_bad_responses_bodies(body, fragment):
    with pytest.raises(InvalidArgument) as err:
        responses_request({"model": BASE, "input": "hi", **body}, BASE)
    assert fragment in err.value.message
