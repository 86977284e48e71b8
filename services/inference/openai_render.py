"""The core's results → OpenAI response JSON (chat, completions, models, SSE). Translation only.

Plain dicts, serialised once: the streaming path builds one small dict per token,
so no pydantic model is constructed there. The unit tests validate every shape
against the `openai` package's own types, which is what clients parse them with.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from services.inference.generation import GenerationResult

DONE = b"data: [DONE]\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    """A named event (the Responses API): `event: <type>` then its data."""
    return f"event: {payload['type']}\n".encode() + sse(payload)


def usage(result: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def finish_reason(result: GenerationResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def extension(result: GenerationResult) -> dict[str, Any]:
    """The `loraplex` field: which adapter version answered, and the grounding (docs/openai.md)."""
    field: dict[str, Any] = {
        "adapter": result.adapter_ref or None,
        "time_to_first_token_ms": round(result.time_to_first_token_ms, 3),
        "total_ms": round(result.total_ms, 3),
    }
    if result.collection:
        field.update(
            collection=result.collection,
            collection_revision=result.collection_revision,
            grounded=result.grounded,
            grounding_score=round(result.grounding_score, 4),
            grounded_threshold=result.grounded_threshold,
            refusal=result.refusal.value,
            quoted=result.quoted,
            text=result.text,
            generated_text=result.generated_text,
            citations=[citation(c) for c in result.citations],
        )
    return field


def citation(c: Any) -> dict[str, Any]:
    chunk = c.chunk
    return {
        "number": c.number,
        "cited": c.cited,
        "supported": c.supported,
        "support": round(c.support, 4),
        "dropped": c.dropped,
        "added": c.added,
        "document_id": chunk.document_id,
        "chunk_index": chunk.chunk_index,
        "start_char": chunk.start_char,
        "end_char": chunk.end_char,
        "score": round(chunk.score, 6),
        "source": {"uri": chunk.source_uri, "title": chunk.source_title},
        "metadata": dict(chunk.metadata),
        "text": chunk.text,
    }


# -- chat completions --------------------------------------------------------------------


def chat_completion(call_id: str, model: str, result: GenerationResult) -> dict[str, Any]:
    return {
        "id": call_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": finish_reason(result),
                "logprobs": None,
            }
        ],
        "usage": usage(result),
        "loraplex": extension(result),
    }


class ChatChunks:
    """The chunks of one streamed chat completion, sharing id, created and model."""

    def __init__(self, call_id: str, model: str) -> None:
        self._head = {"id": call_id, "object": "chat.completion.chunk", "created": int(time.time())}
        self._head["model"] = model

    def role(self) -> bytes:
        return self._choice({"role": "assistant", "content": ""}, None)

    def delta(self, text: str) -> bytes:
        return self._choice({"content": text}, None)

    def finish(self, result: GenerationResult) -> bytes:
        return self._choice({}, finish_reason(result), loraplex=extension(result))

    def usage(self, result: GenerationResult) -> bytes:
        return sse({**self._head, "choices": [], "usage": usage(result)})

    def _choice(self, delta: dict[str, str], reason: str | None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        return sse({**self._head, "choices": [choice], **extra})


# -- completions --------------------------------------------------------------------------


def completion(call_id: str, model: str, result: GenerationResult) -> dict[str, Any]:
    return {
        "id": call_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": result.text,
                "finish_reason": finish_reason(result),
                "logprobs": None,
            }
        ],
        "usage": usage(result),
        "loraplex": extension(result),
    }


class CompletionChunks:
    def __init__(self, call_id: str, model: str) -> None:
        self._head = {"id": call_id, "object": "text_completion", "created": int(time.time())}
        self._head["model"] = model

    def delta(self, text: str) -> bytes:
        return self._choice(text, None)

    def finish(self, result: GenerationResult) -> bytes:
        return self._choice("", finish_reason(result), loraplex=extension(result))

    def usage(self, result: GenerationResult) -> bytes:
        return sse({**self._head, "choices": [], "usage": usage(result)})

    def _choice(self, text: str, reason: str | None, **extra: Any) -> bytes:
        choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        return sse({**self._head, "choices": [choice], **extra})


# -- models -------------------------------------------------------------------------------


def model_card(model_id: str, created: int, owner: str, parent: str | None) -> dict[str, Any]:
    """vLLM's shape: adapters carry `parent` = the base model they were trained on."""
    card = {"id": model_id, "object": "model", "created": created, "owned_by": owner}
    if parent is not None:
        card["parent"] = parent
        card["root"] = parent
    return card
