"""What every OpenAI-shaped HTTP edge parses alike: bodies into pydantic models with a
400 naming the field, and OpenAI's metadata filter grammar (chat's RAG extension,
`file_search`, vector store search)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from services.common.errors import InvalidArgument

B = TypeVar("B", bound=BaseModel)


class OpenAIBody(BaseModel):
    """Unknown fields are kept (and ignored) so newer clients keep working."""

    model_config = ConfigDict(extra="allow")


def parse_body(cls: type[B], body: Any) -> B:
    """Validates a decoded JSON body; the first problem becomes a 400 naming its field."""
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "body"
        raise InvalidArgument(f"{where}: {error['msg']}", param=where) from None


def filter_conditions(spec: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """OpenAI's filter grammar, the subset retrieval answers: `eq`/`in` on scalar values,
    joined by `and`; or the short form {"key": value or [values]}. Returns (key, allowed
    values) pairs, all of which must hold."""
    if not spec:
        return ()
    if not isinstance(spec, dict):
        raise InvalidArgument("filter: give an object")
    if "type" not in spec:  # the short form: {"section": "travel", "lang": ["en", "de"]}
        short = [{"type": _kind(v), "key": k, "value": v} for k, v in spec.items()]
        return tuple(c for part in short for c in filter_conditions(part))
    kind = spec.get("type")
    if kind == "and":
        parts = spec.get("filters")
        if not isinstance(parts, list) or not parts:
            raise InvalidArgument("filter: an 'and' filter needs a non-empty 'filters' list")
        return tuple(c for part in parts for c in filter_conditions(part))
    key, value = spec.get("key"), spec.get("value")
    if not isinstance(key, str) or not key:
        raise InvalidArgument("filter: each comparison needs a string 'key'")
    if kind == "eq" and _scalar(value):
        return ((key, (_text(value),)),)
    if kind == "in" and isinstance(value, list) and value and all(_scalar(v) for v in value):
        return ((key, tuple(_text(v) for v in value)),)
    raise InvalidArgument(
        "filter: use {'type': 'eq', 'key': k, 'value': v}, {'type': 'in', 'key': k,"
        " 'value': [..]} or {'type': 'and', 'filters': [..]}; metadata values are strings"
    )


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | bool)


def _kind(value: Any) -> str:
    return "in" if isinstance(value, list) else "eq"


def _text(value: str | int | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


async def read_json(request: Any) -> Any:
    """A Starlette request's JSON body (its size is the HTTP front end's limit)."""
    import json

    try:
        return json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"the request body is not valid JSON: {exc}") from None


async def unless_disconnected(request: Any, work: Any) -> Any:
    """Awaits `work` (a coroutine), cancelling it if the client disconnects first.

    For answers that are not streamed: a client that gives up (a timeout, Ctrl-C) should
    stop a generation, not leave it running to the end (vLLM does the same). Call it once
    the body has been read: from then on the only message left is the disconnect.
    """
    import asyncio

    from services.common.errors import Cancelled

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        raise Cancelled("the client disconnected")
    return task.result()
