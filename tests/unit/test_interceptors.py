"""Both front ends count a call before its answer reaches the client (who may read the
metrics next), and count it once."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import pytest
from grpc.aio import AbortError
from prometheus_client import REGISTRY

from services.common.admission import Admission
from services.common.auth import KeyRing
from services.common.errors import NotFound
from services.common.interceptors import _wrap_stream_response, _wrap_unary_response

METHOD = "/test.v1.Test/Get"


class _Header(NamedTuple):
    key: str
    value: str


class _Context:
    """What the wrapper uses of a grpc.aio context; `abort` notes the count it saw."""

    def __init__(self) -> None:
        self.counted_at_abort: float | None = None

    def invocation_metadata(self):  # type: ignore[no-untyped-def]
        return (_Header("authorization", "Bearer k1"),)

    def set_trailing_metadata(self, metadata) -> None:  # type: ignore[no-untyped-def]
        pass

    async def abort(self, code, details, trailing=()):  # type: ignore[no-untyped-def]
        self.counted_at_abort = _count()
        raise AbortError()


def _count() -> float:
    value = REGISTRY.get_sample_value("loraplex_rpc_total", {"method": METHOD, "code": "NOT_FOUND"})
    return value or 0.0


def _admission() -> Admission:
    return Admission(KeyRing.load(tenant_keys="acme:k1"))


async def _missing(request, context):  # type: ignore[no-untyped-def]
    raise NotFound("adapter 'acme/absent' not found")


async def _missing_stream(request, context):  # type: ignore[no-untyped-def]
    raise NotFound("adapter 'acme/absent' not found")
    yield  # a generator


def test_a_failed_unary_call_is_counted_before_the_client_sees_its_status():
    wrapped = _wrap_unary_response(_missing, METHOD, _admission(), False)
    context = _Context()
    before = _count()
    with pytest.raises(AbortError):
        asyncio.run(wrapped(object(), context))
    assert context.counted_at_abort == before + 1
    assert _count() == before + 1  # once, not again when the wrapper finishes


def test_a_failed_stream_is_counted_before_the_client_sees_its_status():
    wrapped = _wrap_stream_response(_missing_stream, METHOD, _admission(), False)
    context = _Context()
    before = _count()

    async def drain() -> None:
        async for _ in wrapped(object(), context):
            pass

    with pytest.raises(AbortError):
        asyncio.run(drain())
    assert context.counted_at_abort == before + 1
    assert _count() == before + 1


def test_an_http_answer_is_counted_before_its_last_bytes_leave():
    from services.common.http import AdmissionMiddleware

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    seen: list[float | None] = []

    def count() -> float:
        labels = {"method": "GET (no route)", "code": "NOT_FOUND"}
        return REGISTRY.get_sample_value("loraplex_rpc_total", labels) or 0.0

    async def send(message):  # type: ignore[no-untyped-def]
        if message["type"] == "http.response.body":
            seen.append(count())

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/v1/nothing",
             "headers": [(b"authorization", b"Bearer k1")]}  # fmt: skip
    before = count()
    asyncio.run(AdmissionMiddleware(app, _admission(), 1 << 20)(scope, receive, send))
    assert seen == [before, before + 1]  # not while the body streams; before its end
    assert count() == before + 1
