"""OpenAI-compatible HTTP edge of inference: JSON in, the same core as gRPC, JSON or SSE out.

Routes: `GET /v1/models[/{id}]`, `POST /v1/chat/completions`, `/v1/completions` and
`/v1/responses` (docs/openai.md). Like servicer.py it only converts: admission (keys,
tenant, request id, readiness, error JSON) is the kit's HTTP adapter, the logic is
`InferenceCore` and `ModelCatalog`. Streams are primed up to the first token before the
response starts, so an unknown adapter or an overload still gets its HTTP status; a
client that disconnects mid-stream cancels the generator, which aborts the engine
request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from services.common.context import current_tenant
from services.common.errors import LoraplexError, Unavailable, public_error
from services.common.openai_json import read_json, unless_disconnected
from services.common.readiness import Readiness
from services.inference import openai_convert, openai_render, openai_responses
from services.inference.catalog import ModelCatalog
from services.inference.generation import GenerationResult, InferenceCore
from services.inference.openai_render import DONE, ChatChunks, CompletionChunks

#: Streams answer with these: no proxy buffering, so tokens reach the client as made.
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
Item = str | GenerationResult


def openai_app(routes: OpenAIRoutes, readiness: Readiness) -> FastAPI:
    """The ASGI app the inference HTTP front end serves: the routes, and `GET /health`
    (public: 200 once the model is loaded, 503 before) for probes and pool pickers."""
    api = FastAPI(title="loraplex inference (OpenAI-compatible)", docs_url=None, redoc_url=None)
    api.include_router(routes.router)

    @api.get("/health", include_in_schema=False)
    async def health() -> Response:
        return Response(status_code=200 if readiness.ready else 503)

    return api


class OpenAIRoutes:
    """The inference routes, bound to the core once the app has started it."""

    def __init__(self) -> None:
        self.core: InferenceCore | None = None
        self.catalog: ModelCatalog | None = None
        self.router = APIRouter(prefix="/v1")
        self.router.add_api_route("/models", self.list_models, methods=["GET"])
        self.router.add_api_route("/models/{model_id:path}", self.get_model, methods=["GET"])
        self.router.add_api_route("/chat/completions", self.chat, methods=["POST"])
        self.router.add_api_route("/completions", self.completions, methods=["POST"])
        self.router.add_api_route("/responses", self.responses, methods=["POST"])

    def attach(self, core: InferenceCore, catalog: ModelCatalog) -> None:
        self.core, self.catalog = core, catalog

    def _parts(self) -> tuple[InferenceCore, ModelCatalog]:
        if self.core is None or self.catalog is None:  # the readiness gate normally answers
            raise Unavailable("the model is still loading; retry shortly")
        return self.core, self.catalog

    # -- models ---------------------------------------------------------------------------

    async def list_models(self) -> JSONResponse:
        _, catalog = self._parts()
        entries = await catalog.list(current_tenant())
        data = [openai_render.model_card(e.id, e.created, e.owned_by, e.parent) for e in entries]
        return JSONResponse({"object": "list", "data": data})

    async def get_model(self, model_id: str) -> JSONResponse:
        _, catalog = self._parts()
        e = await catalog.get(current_tenant(), model_id)
        return JSONResponse(openai_render.model_card(e.id, e.created, e.owned_by, e.parent))

    # -- generation -----------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        core, catalog = self._parts()
        body = await read_json(request)
        parsed = openai_convert.chat_request(body, catalog.base_model)
        call_id = openai_render.new_id("chatcmpl")
        items = await self._start(core, parsed.request)
        if not parsed.stream:
            result = await unless_disconnected(request, _last(items))
            return JSONResponse(openai_render.chat_completion(call_id, parsed.model, result))
        chunks = ChatChunks(call_id, parsed.model)
        return self._sse(items, _chunk_events(chunks, items, parsed.include_usage, chunks.role()))

    async def completions(self, request: Request) -> Response:
        core, catalog = self._parts()
        body = await read_json(request)
        parsed = openai_convert.completion_request(body, catalog.base_model)
        call_id = openai_render.new_id("cmpl")
        items = await self._start(core, parsed.request)
        if not parsed.stream:
            result = await unless_disconnected(request, _last(items))
            return JSONResponse(openai_render.completion(call_id, parsed.model, result))
        chunks = CompletionChunks(call_id, parsed.model)
        return self._sse(items, _chunk_events(chunks, items, parsed.include_usage))

    async def responses(self, request: Request) -> Response:
        core, catalog = self._parts()
        body = await read_json(request)
        call = openai_responses.responses_request(body, catalog.base_model)
        render = openai_responses.ResponseRender(call)
        items = await self._start(core, call.request)
        if not call.stream:
            result = await unless_disconnected(request, _last(items))
            return JSONResponse(render.response("completed", result))

        async def events(first: Item) -> AsyncIterator[bytes]:
            for event in render.opening():
                yield event
            async for item in _resume(first, items):
                if isinstance(item, GenerationResult):
                    for event in render.closing(item):
                        yield event
                else:
                    yield render.delta(item)

        return self._sse(items, events, done=False)

    async def _start(self, core: InferenceCore, spec: Any) -> _Primed:
        """Runs the generation up to its first item, so errors before it keep their status."""
        primed = _Primed(core.generate(current_tenant(), spec))
        await primed.prime()
        return primed

    def _sse(
        self,
        items: _Primed,
        events: Callable[[Item], AsyncIterator[bytes]],
        done: bool = True,
    ) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in events(items.first):
                    yield chunk
            except LoraplexError as exc:  # after the status line: the error goes in the stream
                yield openai_render.sse(public_error(exc).openai_body())
            finally:
                await items.close()  # a disconnect cancels us here: the engine aborts
            if done:
                yield DONE

        return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


class _Primed:
    """A core generation whose first item has been awaited."""

    def __init__(self, generation: AsyncIterator[Item]) -> None:
        self.generation = generation
        self.first: Item = ""

    async def prime(self) -> None:
        try:
            self.first = await anext(self.generation)
        except BaseException:
            await self.close()
            raise

    def __aiter__(self) -> AsyncIterator[Item]:
        return self.generation

    async def close(self) -> None:
        await self.generation.aclose()  # type: ignore[attr-defined]


async def _resume(first: Item, rest: _Primed) -> AsyncIterator[Item]:
    yield first
    if isinstance(first, GenerationResult):
        return
    async for item in rest:
        yield item


async def _last(items: _Primed) -> GenerationResult:
    try:
        async for item in _resume(items.first, items):
            if isinstance(item, GenerationResult):
                return item
    finally:
        await items.close()
    raise Unavailable("generation ended without a result")


def _chunk_events(
    chunks: ChatChunks | CompletionChunks,
    items: _Primed,
    include_usage: bool,
    opening: bytes | None = None,
) -> Callable[[Item], AsyncIterator[bytes]]:
    """The SSE body of a streamed chat or completion: deltas, the finish chunk, usage."""

    async def events(first: Item) -> AsyncIterator[bytes]:
        if opening is not None:
            yield opening
        async for item in _resume(first, items):
            if isinstance(item, GenerationResult):
                yield chunks.finish(item)
                if include_usage:
                    yield chunks.usage(item)
            else:
                yield chunks.delta(item)

    return events
