"""OpenAI request bodies → the inference core's `GenerationRequest`. Translation only.

The bodies are validated here with pydantic, field by field, so a bad body is a 400
naming the field (never FastAPI's 422). Fields the core cannot honour (`n` > 1, tools,
logprobs) are refused by name rather than silently ignored; fields that do not change
the answer (`user`, `metadata`, `service_tier`...) are ignored, as vLLM does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.adapter_ref import AdapterRef, parse_ref
from services.common.errors import InvalidArgument, LoraplexError, NotFound
from services.common.inputs import MAX_TOP_K
from services.common.openai_json import OpenAIBody, filter_conditions, parse_body
from services.inference.generation import GenerationRequest, RagRequest
from services.inference.grounding import AbstainPolicy
from services.inference.records import MetadataCondition, MetadataFilter

#: Roles the OpenAI chat API sends that map onto the core's; "developer" is the new "system".
ROLE_MAP = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class RagOptions(BaseModel):
    """`extra_body={"loraplex": {...}}`: retrieval grounding for one request (docs/openai.md)."""

    model_config = ConfigDict(extra="forbid")
    collection: str = Field(min_length=1)
    #: 0: the suite's default (`services.common.inputs.DEFAULT_TOP_K`).
    top_k: int = Field(0, ge=0, le=MAX_TOP_K)
    #: OpenAI's vector-store filter grammar: {"type": "eq", "key": ..., "value": ...} or "and".
    filter: dict[str, Any] | None = None
    #: Unset keeps every hit.
    min_score: float | None = None
    hybrid: bool = False
    max_context_tokens: int = Field(0, ge=0)
    abstain: Literal["off", "refuse", "quote"] = "off"
    #: Grounding score an answer needs to be flagged grounded (unset: the tenant's default).
    grounded_threshold: float | None = Field(None, ge=0, le=1)
    #: Below this score REFUSE and QUOTE serve nothing (unset: the service's default).
    abstain_threshold: float | None = Field(None, ge=0, le=1)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(OpenAIBody):
    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    max_tokens: int | None = Field(None, ge=1)
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | int | None = None
    loraplex: RagOptions | None = None


class ChatMessage(OpenAIBody):
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatBody(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None


class CompletionBody(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


@dataclass(frozen=True)
class Parsed:
    """A body turned into what the core takes, plus how the edge must answer."""

    model: str
    request: GenerationRequest
    stream: bool
    include_usage: bool


def adapter_for(model: str, base_model: str) -> AdapterRef | None:
    """`model` is the base model's name or an adapter reference; anything else is 404."""
    if model == base_model:
        return None
    try:
        return parse_ref(model)
    except LoraplexError:
        raise NotFound(f"the model {model[:200]!r} does not exist") from None


def chat_request(body: Any, base_model: str) -> Parsed:
    chat = parse_body(ChatBody, body)
    _refuse_unsupported(chat)
    if chat.tools:
        raise InvalidArgument("tools: function calling is not supported")
    if chat.response_format and chat.response_format.get("type", "text") != "text":
        raise InvalidArgument("response_format: only {'type': 'text'} is supported")
    messages = [_turn(i, m) for i, m in enumerate(chat.messages)]
    request = GenerationRequest(
        adapter=adapter_for(chat.model, base_model),
        messages=messages,
        max_tokens=chat.max_completion_tokens or chat.max_tokens or 0,
        rag=rag_request(chat.loraplex),
        **_sampling(chat),
    )
    return Parsed(chat.model, request, chat.stream, _include_usage(chat))


def completion_request(body: Any, base_model: str) -> Parsed:
    completion = parse_body(CompletionBody, body)
    _refuse_unsupported(completion)
    if completion.echo or completion.suffix or (completion.best_of or 1) > 1:
        raise InvalidArgument("echo, suffix and best_of are not supported")
    prompt = completion.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InvalidArgument(
                "prompt: give one text prompt (token ids and batches are not supported)"
            )
        prompt = prompt[0]
    request = GenerationRequest(
        adapter=adapter_for(completion.model, base_model),
        prompt=prompt,
        max_tokens=completion.max_tokens or 0,
        rag=rag_request(completion.loraplex),
        use_chat_template=False,
        **_sampling(completion),
    )
    return Parsed(completion.model, request, completion.stream, _include_usage(completion))


def rag_request(options: RagOptions | None) -> RagRequest | None:
    if options is None:
        return None
    if options.min_score is not None and not math.isfinite(options.min_score):
        raise InvalidArgument("loraplex.min_score must be a finite number", param="min_score")
    return RagRequest(
        collection=options.collection,
        top_k=options.top_k,
        filter=metadata_filter(options.filter),
        min_score=options.min_score,
        hybrid=options.hybrid,
        max_context_tokens=options.max_context_tokens,
        abstain=AbstainPolicy(options.abstain),
        grounded_threshold=options.grounded_threshold,
        abstain_threshold=options.abstain_threshold,
    )


def metadata_filter(spec: dict[str, Any] | None) -> MetadataFilter | None:
    """OpenAI's filter grammar as the core's record (retrieval's gateway converts it)."""
    conditions = filter_conditions(spec)
    if not conditions:
        return None
    return MetadataFilter(tuple(MetadataCondition(key, values) for key, values in conditions))


def _turn(index: int, message: ChatMessage) -> tuple[str, str]:
    role = ROLE_MAP.get(message.role)
    if role is None:
        raise InvalidArgument(
            f"messages.{index}.role: {message.role[:40]!r} is not supported; use system,"
            " developer, user or assistant"
        )
    return role, content_text(message.content, f"messages.{index}.content")


def content_text(content: str | Sequence[dict[str, Any]] | None, where: str) -> str:
    """Text content, or a list of text parts joined; images and audio are refused."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content or ():
        if part.get("type") not in ("text", "input_text", "output_text") or not isinstance(
            part.get("text"), str
        ):
            raise InvalidArgument(f"{where}: only text parts are supported")
        parts.append(part["text"])
    return "\n".join(parts)


def _refuse_unsupported(body: _Sampling) -> None:
    if (body.n or 1) != 1:
        raise InvalidArgument("n: only one choice per request is supported (n=1)")
    if body.logprobs:
        raise InvalidArgument("logprobs are not supported")
    if body.frequency_penalty or body.presence_penalty:
        raise InvalidArgument("frequency_penalty and presence_penalty are not supported")


def _sampling(body: _Sampling) -> dict[str, Any]:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or ())
    return {
        # OpenAI's default temperature is 1; the core treats 0 as greedy.
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "stop": stop,
        "seed": body.seed,
    }


def _include_usage(body: _Sampling) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)
