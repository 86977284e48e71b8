"""The Responses API, stateless (`store: false`), text in and out: body → core request,
result → `response` object, and the streamed events by their Open Responses names.

A `file_search` tool naming one vector store (a retrieval collection: the gateway
makes one per vector store, under the same name) runs the RAG path; the answer's
citation markers come back as `file_citation` annotations on the output text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from services.common.errors import InvalidArgument
from services.common.openai_json import OpenAIBody, parse_body
from services.inference.generation import GenerationRequest, GenerationResult, RagRequest
from services.inference.grounding import AbstainPolicy
from services.inference.openai_convert import ROLE_MAP, adapter_for, content_text, metadata_filter
from services.inference.openai_render import extension, new_id, sse_event

MARKER = re.compile(r"\[(\d{1,3})\]")


class ResponsesBody(OpenAIBody):
    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    text: dict[str, Any] | None = None
    #: loraplex's extension, as in chat: abstain policy and other RAG knobs.
    loraplex: dict[str, Any] | None = None


@dataclass(frozen=True)
class ResponsesCall:
    model: str
    request: GenerationRequest
    stream: bool
    tools: list[dict[str, Any]]
    body: ResponsesBody


def responses_request(body: Any, base_model: str) -> ResponsesCall:
    parsed = parse_body(ResponsesBody, body)
    if parsed.store:
        raise InvalidArgument("store: responses are stateless here; send store=false")
    if parsed.previous_response_id:
        raise InvalidArgument("previous_response_id: responses are not stored; send the turns")
    fmt = (parsed.text or {}).get("format") or {}
    if fmt.get("type", "text") != "text":
        raise InvalidArgument("text.format: only text output is supported")
    turns = [("system", parsed.instructions)] if parsed.instructions else []
    turns += _input_turns(parsed.input)
    request = GenerationRequest(
        adapter=adapter_for(parsed.model, base_model),
        messages=turns,
        max_tokens=parsed.max_output_tokens or 0,
        temperature=1.0 if parsed.temperature is None else parsed.temperature,
        top_p=1.0 if parsed.top_p is None else parsed.top_p,
        rag=_file_search(parsed.tools or [], parsed.loraplex or {}),
    )
    return ResponsesCall(parsed.model, request, parsed.stream, parsed.tools or [], parsed)


def _input_turns(items: str | list[dict[str, Any]]) -> list[tuple[str, str]]:
    if isinstance(items, str):
        return [("user", items)]
    turns = []
    for i, item in enumerate(items):
        if item.get("type", "message") != "message" or item.get("role") not in ROLE_MAP:
            raise InvalidArgument(f"input.{i}: only message items with text content are supported")
        turns.append((ROLE_MAP[item["role"]], content_text(item.get("content"), f"input.{i}")))
    return turns


def _file_search(tools: list[dict[str, Any]], extra: dict[str, Any]) -> RagRequest | None:
    rag = None
    for i, tool in enumerate(tools):
        if tool.get("type") != "file_search":
            raise InvalidArgument(f"tools.{i}: only the file_search tool is supported")
        stores = tool.get("vector_store_ids")
        if rag is not None or not isinstance(stores, list) or len(stores) != 1:
            raise InvalidArgument("tools: file_search takes exactly one vector store id")
        top_k = tool.get("max_num_results") or 4
        threshold = (tool.get("ranking_options") or {}).get("score_threshold") or 0.0
        if not isinstance(top_k, int) or not 0 < top_k <= 50:
            raise InvalidArgument("tools.file_search.max_num_results must be between 1 and 50")
        if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            raise InvalidArgument("tools.file_search.ranking_options.score_threshold: 0 to 1")
        abstain = extra.get("abstain", "off")
        if abstain not in ("off", "refuse", "quote"):
            raise InvalidArgument("loraplex.abstain must be off, refuse or quote")
        rag = RagRequest(
            collection=str(stores[0]),
            top_k=top_k,
            filter=metadata_filter(tool.get("filters")),
            min_score=float(threshold),
            abstain=AbstainPolicy(abstain),
        )
    return rag


# -- rendering ----------------------------------------------------------------------------


def annotations(result: GenerationResult) -> list[dict[str, Any]]:
    """A `file_citation` at each kept citation marker of the checked text."""
    cited = {c.number: c.chunk for c in result.citations if not c.dropped}
    found = []
    for match in MARKER.finditer(result.text):
        chunk = cited.get(int(match.group(1)))
        if chunk is not None:
            found.append(
                {
                    "type": "file_citation",
                    "file_id": chunk.document_id,
                    "filename": chunk.source_title or chunk.source_uri or chunk.document_id,
                    "index": match.start(),
                }
            )
    return found


class ResponseRender:
    """One response's objects and events; ids and creation time shared by all of them."""

    def __init__(self, call: ResponsesCall) -> None:
        self.call = call
        self.id = new_id("resp")
        self.message_id = new_id("msg")
        self.search_id = new_id("fs")
        self.created = int(time.time())
        self.sequence = 0

    def response(self, status: str, result: GenerationResult | None = None) -> dict[str, Any]:
        body = self.call.body
        output = []
        if result is not None:
            if self.call.request.rag:
                output.append(self._search_item(result))
            output.append(self._message(result, "completed"))
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.call.model,
            "output": output,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "temperature": self.call.request.temperature,
            "top_p": self.call.request.top_p,
            "parallel_tool_calls": False,
            "tool_choice": "auto",
            "tools": self.call.tools,
            "store": False,
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "error": None,
            "incomplete_details": None,
            "metadata": {},
        }
        if result is not None:
            if result.finish_reason == "length":
                obj["status"] = "incomplete"
                obj["incomplete_details"] = {"reason": "max_output_tokens"}
            obj["usage"] = {
                "input_tokens": result.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": result.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            }
            obj["loraplex"] = extension(result)
        return obj

    def _message(self, result: GenerationResult | None, status: str) -> dict[str, Any]:
        content = []
        if result is not None:
            content = [self._text_part(result.text, annotations(result))]
        return {
            "type": "message",
            "id": self.message_id,
            "role": "assistant",
            "status": status,
            "content": content,
        }

    @staticmethod
    def _text_part(text: str, notes: list[dict[str, Any]]) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": notes, "logprobs": []}

    def _search_item(self, result: GenerationResult | None) -> dict[str, Any]:
        rag = self.call.request.rag
        assert rag is not None
        question = self.call.request.messages[-1][1] if self.call.request.messages else ""
        return {
            "type": "file_search_call",
            "id": self.search_id,
            "status": "completed" if result is not None else "searching",
            "queries": [question],
            "results": None,
        }

    # -- events -----------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        self.sequence += 1
        return sse_event({"type": kind, "sequence_number": self.sequence, **fields})

    def opening(self) -> Iterator[bytes]:
        yield self._event("response.created", response=self.response("in_progress"))
        yield self._event("response.in_progress", response=self.response("in_progress"))
        index = 0
        if self.call.request.rag:
            # Retrieval runs before the first token; by then the search has completed.
            item = {**self._search_item(None), "status": "in_progress"}
            yield self._event("response.output_item.added", output_index=0, item=item)
            index = 1
        self.message_index = index
        yield self._event(
            "response.output_item.added",
            output_index=index,
            item=self._message(None, "in_progress"),
        )
        yield self._event(
            "response.content_part.added",
            item_id=self.message_id,
            output_index=index,
            content_index=0,
            part=self._text_part("", []),
        )

    def delta(self, text: str) -> bytes:
        return self._event(
            "response.output_text.delta",
            item_id=self.message_id,
            output_index=self.message_index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def closing(self, result: GenerationResult) -> Iterator[bytes]:
        where = {"item_id": self.message_id, "output_index": self.message_index, "content_index": 0}
        notes = annotations(result)
        if self.call.request.rag:
            yield self._event(
                "response.output_item.done", output_index=0, item=self._search_item(result)
            )
        for i, note in enumerate(notes):
            yield self._event(
                "response.output_text.annotation.added",
                annotation_index=i,
                annotation=note,
                **where,
            )
        yield self._event("response.output_text.done", text=result.text, logprobs=[], **where)
        yield self._event(
            "response.content_part.done", part=self._text_part(result.text, notes), **where
        )
        yield self._event(
            "response.output_item.done",
            output_index=self.message_index,
            item=self._message(result, "completed"),
        )
        final = self.response("completed", result)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        yield self._event(kind, response=final)
