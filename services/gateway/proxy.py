"""The inference routes forwarded to one inference HTTP front end, for a single local
base URL (`inference_url`). The caller's own headers go along, so inference admits the
call itself; responses stream back as they come, and a client that leaves closes the
upstream connection, which aborts the generation there.

HTTP/1.1 over plain asyncio streams, one connection per call (`connection: close`),
not an HTTP client library: this hop runs in the gateway's event loop next to every
stream it relays, and httpx cost more loop time per call than inference itself (URL
building, a connection-pool scan per request and per close that grows with the square
of the open connections, h11 parsing of every streamed chunk). With 32 concurrent
streams that was most of the gateway's added time to first token
(bench/openai_http_bench.py). Idle connections were not reused anyway: the pool's
keep-alive had to stay below uvicorn's 5 s.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from services.common.errors import Unavailable
from services.common.openai_json import unless_disconnected

#: What inference serves; everything else is the gateway's own.
ROUTES = (
    ("/v1/models", ["GET"]),
    ("/v1/models/{model_id:path}", ["GET"]),
    ("/v1/chat/completions", ["POST"]),
    ("/v1/completions", ["POST"]),
    ("/v1/responses", ["POST"]),
)
FORWARDED = frozenset(
    {b"authorization", b"content-type", b"accept", b"x-request-id", b"x-loraplex-tenant"}
)
RETURNED = ("content-type", "cache-control", "x-request-id")
CONNECT_TIMEOUT_SECONDS = 10.0
#: The longest response head (status line and headers) accepted from inference.
MAX_HEAD_BYTES = 64 * 1024
READ_BYTES = 64 * 1024


class UpstreamError(Exception):
    """Inference answered something that is not HTTP/1.1 as uvicorn speaks it."""


@dataclass
class _Upstream:
    """One forwarded call once inference's status line and headers are in."""

    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    length: int | None
    chunked: bool

    async def body(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed); closes the connection after,
        or when the caller leaves, which inference sees as a disconnect."""
        try:
            if self.chunked:
                async for part in _dechunk(self.reader):
                    yield part
            elif self.length is not None:
                left = self.length
                while left:
                    part = await self.reader.read(min(left, READ_BYTES))
                    if not part:
                        raise UpstreamError("inference closed the connection mid-body")
                    left -= len(part)
                    yield part
            else:  # `connection: close` without a length: the body runs to the end
                while part := await self.reader.read(READ_BYTES):
                    yield part
        finally:
            self.writer.close()


class InferenceProxy:
    def __init__(self, base_url: str) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"inference_url {base_url!r}: give http(s)://host:port")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.authority = url.netloc.encode("ascii")
        self.prefix = url.path.rstrip("/").encode()
        self.tls = ssl.create_default_context() if url.scheme == "https" else None
        self.router = APIRouter()
        for path, methods in ROUTES:
            self.router.add_api_route(path, self.forward, methods=methods)

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        try:
            # A client that leaves before the first byte closes the upstream call too.
            upstream = await unless_disconnected(request, self._send(request, body))
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            UpstreamError,
        ):
            raise Unavailable("the inference service is unreachable; retry shortly") from None
        returned = {k: v for k, v in upstream.headers.items() if k in RETURNED}
        return StreamingResponse(upstream.body(), status_code=upstream.status, headers=returned)

    async def _send(self, request: Request, body: bytes) -> _Upstream:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.tls, limit=MAX_HEAD_BYTES),
            CONNECT_TIMEOUT_SECONDS,
        )
        try:
            writer.write(self._head(request, len(body)) + body)  # one write, one segment
            head = await reader.readuntil(b"\r\n\r\n")
            return _response(head, reader, writer)
        except BaseException:
            writer.close()
            raise

    def _head(self, request: Request, length: int) -> bytes:
        scope = request.scope
        target = self.prefix + scope.get("raw_path", scope["path"].encode())
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        lines = [
            scope["method"].encode() + b" " + target + b" HTTP/1.1",
            b"host: " + self.authority,
            b"connection: close",
            b"content-length: " + str(length).encode(),
        ]
        # Names arrive lower-case; uvicorn has already refused CR/LF in values.
        lines += [k + b": " + v for k, v in scope["headers"] if k in FORWARDED]
        return b"\r\n".join(lines) + b"\r\n\r\n"


def _response(head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Upstream:
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise UpstreamError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(rest[:3])
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = headers.get("content-length")
    if status in (204, 304):
        length, chunked = "0", False
    if length is not None and not length.isdigit():
        raise UpstreamError(f"bad content-length {length[:20]!r}")
    size = None if length is None else int(length)
    return _Upstream(status, headers, reader, writer, size, chunked)


async def _dechunk(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        size_line = await reader.readline()
        size = size_line.split(b";", 1)[0].strip()
        if not size or any(c not in b"0123456789abcdefABCDEF" for c in size):
            raise UpstreamError("inference closed the connection mid-stream")
        if int(size, 16) == 0:
            while (await reader.readline()).strip():  # trailers, until the blank line
                pass
            return
        part = await reader.readexactly(int(size, 16) + 2)
        yield part[:-2]
