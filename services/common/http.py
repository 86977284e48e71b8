"""The HTTP adapter of admission, and an HTTP front end served by uvicorn in the app's loop.

An app builds a FastAPI (or any ASGI) app for its routes and appends
`HttpFrontEnd(asgi_app, "openai_port")` to its `front_ends`; the server starts it
with the gRPC server, on the port that setting names, and drains both together.
Every request then goes through `AdmissionMiddleware`, the HTTP twin of the gRPC
interceptor:

- admission (`services.common.admission`): `authorization: Bearer <key>`,
  `x-loraplex-tenant` for service keys, the service scopes on `METHOD /template`,
  `x-request-id` (echoed on every answer), the readiness gate (503 while starting);
- the caller and request id in the context vars, for the route, the core and logs;
- errors as OpenAI's JSON (`{"error": {"message", "type", "param", "code"}}`) with
  the HTTP status of `services.common.errors.public_error`; a body that is not JSON
  or does not match the route's model is 400, one over `max_body_bytes` is 413;
- the same Prometheus metrics as gRPC, labelled `METHOD /route/{template}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.admission import Admission, Call
from services.common.context import REQUEST_ID_HEADER, request_id_var
from services.common.errors import (
    InvalidArgument,
    LoraplexError,
    PublicError,
    TooLarge,
    code_for_http,
    public_error,
)

if TYPE_CHECKING:
    from services.common.server import Server

log = logging.getLogger(__name__)

#: Where the error handlers leave an exception for the middleware to log and count.
_ERROR_KEY = "loraplex.error"


def error_response(error: PublicError) -> JSONResponse:
    return JSONResponse(error.openai_body(), status_code=error.http_status)


def _validation_error(exc: RequestValidationError) -> InvalidArgument:
    """FastAPI's 422 as OpenAI's 400, naming the field (`param`) at fault."""
    first: Mapping[str, Any] = (exc.errors() or [{}])[0]
    if first.get("type") == "json_invalid":
        return InvalidArgument("the request body is not valid JSON")
    where = [str(part) for part in first.get("loc", ())[1:]]
    param = ".".join(where) or None
    message = str(first.get("msg", "invalid request"))
    return InvalidArgument(f"{param}: {message}" if param else message, param=param)


def _http_error(exc: HTTPException) -> LoraplexError | PublicError:
    # FastAPI turns any failure while reading the body into a bare 400; the cause may
    # be ours (the body limit) and says more.
    if isinstance(exc.__cause__, LoraplexError):
        return exc.__cause__
    if isinstance(exc.__cause__, UnicodeDecodeError):
        return InvalidArgument("the request body is not valid JSON: it is not UTF-8")
    return PublicError(code_for_http(exc.status_code), str(exc.detail), None, exc.status_code)


def install_error_handlers(app: FastAPI) -> None:
    """Every error an app raises answered as OpenAI's error JSON."""

    async def loraplex(request: Request, exc: Exception) -> JSONResponse:
        request.scope[_ERROR_KEY] = exc
        return error_response(public_error(exc))

    async def validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        error = _validation_error(exc)
        request.scope[_ERROR_KEY] = error
        return error_response(public_error(error))

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        error = _http_error(exc)
        if isinstance(error, LoraplexError):
            request.scope[_ERROR_KEY] = error
            error = public_error(error)
        return error_response(error)

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answer; the middleware logs it once.
        return error_response(public_error(exc))

    app.add_exception_handler(LoraplexError, loraplex)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(Exception, internal)


def _template(app: ASGIApp, scope: Scope) -> str | None:
    """The path template of the route `scope` reaches in a Starlette/FastAPI app."""
    for route in getattr(app, "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return getattr(route, "path", None)
    return None


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


class AdmissionMiddleware:
    """Pure ASGI (so the context vars it sets reach the route), around the whole app."""

    def __init__(
        self,
        app: ASGIApp,
        admission: Admission,
        max_body_bytes: int,
        public_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.admission = admission
        self.max_body_bytes = max_body_bytes
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        # The route's template (`GET /v1/models/{model}`) names it in scopes and metrics,
        # known before admission, so a caller's made-up paths cannot mint metric series.
        template = _template(self.app, scope)
        route = f"{scope['method']} {template or scope['path']}"
        call = Call(self.admission, route)
        counted_as = route if template else f"{scope['method']} (no route)"
        status = 0
        received = 0
        settled = False

        def settle() -> None:
            """The call's outcome, once: from the app's error or the status it sent."""
            nonlocal settled
            if settled:
                return
            settled = True
            if scope.get(_ERROR_KEY) is not None:
                call.failed(scope[_ERROR_KEY])
            elif status:
                call.code = code_for_http(status)

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                request_id = request_id_var.get().encode("latin-1", "replace")
                headers = [*message.get("headers", ()), (REQUEST_ID_HEADER.encode(), request_id)]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                settle()  # counted before the last bytes leave: the client may read metrics next
                call.finish(route=counted_as)
            await send(message)

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self._too_large()
            return message

        cancelled = False
        try:
            headers = _headers(scope)
            await call.enter(headers)
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise self._too_large()
            await self.app(scope, limited, answer)
            settle()
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as exc:
            settled = True
            error = call.failed(exc)
            if not status:  # else the answer has begun: a stream can only be cut short
                await answer(
                    {
                        "type": "http.response.start",
                        "status": error.http_status,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                body = error_response(error).body
                await answer({"type": "http.response.body", "body": body})
        finally:
            call.finish(cancelled, counted_as)

    def _too_large(self) -> TooLarge:
        return TooLarge(f"the request body is larger than {self.max_body_bytes} bytes")


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside the app's loop: the server's signal handlers, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpFrontEnd:
    """An ASGI app (FastAPI) served by uvicorn on the port `port_setting` names.

    `max_body_bytes` defaults to the settings' `max_message_bytes`; `public_paths`
    skip admission (an unauthenticated probe path, say). Server TLS and mutual TLS
    follow the same settings as gRPC.
    """

    def __init__(
        self,
        app: ASGIApp,
        port_setting: str,
        *,
        max_body_bytes: int | None = None,
        public_paths: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.port_setting = port_setting
        self.max_body_bytes = max_body_bytes
        self.public_paths = frozenset(public_paths)
        self.port = 0
        if isinstance(app, FastAPI):
            install_error_handlers(app)
        self._server: _EmbeddedUvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, server: Server) -> None:
        settings = server.settings
        limit = self.max_body_bytes or settings.max_message_bytes
        asgi = AdmissionMiddleware(self.app, server.admission, limit, self.public_paths)
        tls: dict[str, Any] = {}
        if settings.tls_cert_file and settings.tls_key_file:
            tls = {"ssl_certfile": settings.tls_cert_file, "ssl_keyfile": settings.tls_key_file}
            if settings.tls_client_ca_file:
                tls |= {
                    "ssl_ca_certs": str(settings.tls_client_ca_file),
                    "ssl_cert_reqs": ssl.CERT_REQUIRED,
                }
        config = uvicorn.Config(
            asgi,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            limit_concurrency=settings.max_concurrent_rpcs,
            **tls,
        )
        sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, int(getattr(settings, self.port_setting))))
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        self._server = _EmbeddedUvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task
                raise RuntimeError(f"the HTTP server on port {self.port} did not start")
            await asyncio.sleep(0.01)
        log.info("%s HTTP on %s:%d", settings.service_name, settings.host, self.port)

    async def ready(self) -> None:
        """Readiness is the shared gate: 503 before, admitted after."""

    async def not_ready(self) -> None:
        """Nothing to announce: uvicorn closes keep-alive connections as it drains."""

    async def stop(self, grace: float) -> None:
        if self._server is None or self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = max(grace, 0.0)  # type: ignore[assignment]
        self._server.force_exit = grace <= 0
        self._server.should_exit = True
        await self._task
