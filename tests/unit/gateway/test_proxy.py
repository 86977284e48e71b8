"""The gateway's forwarding of inference routes, against a scripted HTTP/1.1 server on a
loopback port: what it sends, how it reads chunked and sized bodies, and what a broken
upstream becomes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from starlette.requests import Request

from services.common.errors import Unavailable
from services.gateway.proxy import InferenceProxy, UpstreamError


@contextlib.asynccontextmanager
async def upstream(answer: bytes) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A server that reads one request head and body, writes `answer`, and closes."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line[15:]) for line in head.split(b"\r\n") if line.startswith(b"content-length")),
            0,
        )
        seen.append(head + await reader.readexactly(length))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen


def request(body: bytes = b"{}") -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"x=1",
        "headers": [
            (b"authorization", b"Bearer k"),
            (b"content-type", b"application/json"),
            (b"cookie", b"not-forwarded"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays: no disconnect
        return {}

    return Request(scope, receive)


async def body_of(response) -> bytes:
    return b"".join([part async for part in response.body_iterator])


async def test_forwards_the_call_and_streams_a_chunked_answer_back():
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nx-other: 1\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
        b"6\r\ndata: \r\n3\r\n{}\n\r\n0\r\n\r\n"
    )
    async with upstream(answer) as (url, seen):
        response = await InferenceProxy(url).forward(request(b'{"a":1}'))
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert "x-other" not in response.headers
        assert await body_of(response) == b"data: {}\n"
    head, _, sent = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?x=1 HTTP/1.1"
    assert b"connection: close" in lines and b"authorization: Bearer k" in lines
    assert not any(line.startswith(b"cookie") for line in lines)
    assert sent == b'{"a":1}'


async def test_a_sized_answer_keeps_its_status():
    answer = b'HTTP/1.1 404 Not Found\r\ncontent-length: 11\r\n\r\n{"error":1}'
    async with upstream(answer) as (url, _):
        response = await InferenceProxy(url).forward(request())
        assert response.status_code == 404
        assert await body_of(response) == b'{"error":1}'


@pytest.mark.parametrize("answer", [b"", b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\n"])
async def test_an_upstream_that_does_not_answer_http_is_unavailable(answer):
    async with upstream(answer) as (url, _):
        with pytest.raises(Unavailable, match="unreachable"):
            await InferenceProxy(url).forward(request())


async def test_nothing_listening_is_unavailable():
    async with upstream(b"") as (url, _):
        pass  # closed: the port is free again
    with pytest.raises(Unavailable):
        await InferenceProxy(url).forward(request())


async def test_a_stream_cut_short_fails_instead_of_ending_quietly():
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n"
    async with upstream(answer) as (url, _):
        response = await InferenceProxy(url).forward(request())
        with pytest.raises(UpstreamError):
            await body_of(response)


def test_the_base_url_must_name_a_host():
    with pytest.raises(ValueError, match="inference_url"):
        InferenceProxy("127.0.0.1:8054")
