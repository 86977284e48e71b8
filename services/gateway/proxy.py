"""The inference routes forwarded to one inference HTTP front end, for a single local
base URL (`inference_url`). The caller's own headers go along, so inference admits the
call itself; responses stream back as they come, and a client that leaves closes the
upstream stream, which aborts the generation there."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
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
FORWARDED = ("authorization", "content-type", "accept", "x-request-id", "x-loraplex-tenant")
RETURNED = ("content-type", "cache-control", "x-request-id")


class InferenceProxy:
    def __init__(self, base_url: str) -> None:
        # No read timeout: a stream may pause as long as the model thinks.
        timeout = httpx.Timeout(10.0, read=None)
        # Idle connections dropped before uvicorn's 5 s keep-alive ends them, so none is
        # reused just as the server closes it.
        limits = httpx.Limits(
            max_connections=None, max_keepalive_connections=256, keepalive_expiry=2.0
        )
        self.client = httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits)
        self.router = APIRouter()
        for path, methods in ROUTES:
            self.router.add_api_route(path, self.forward, methods=methods)

    async def forward(self, request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
        upstream = self.client.build_request(
            request.method, request.url.path, params=request.query_params,
            headers=headers, content=await request.body(),
        )  # fmt: skip
        try:
            # A client that leaves before the first byte closes the upstream call too.
            reply = await unless_disconnected(request, self.client.send(upstream, stream=True))
        except httpx.HTTPError:
            raise Unavailable("the inference service is unreachable; retry shortly") from None
        returned = {k: v for k, v in reply.headers.items() if k in RETURNED}

        async def body() -> AsyncIterator[bytes]:
            try:
                async for part in reply.aiter_raw():
                    yield part
            finally:
                await reply.aclose()

        return StreamingResponse(body(), status_code=reply.status_code, headers=returned)

    async def close(self) -> None:
        await self.client.aclose()
