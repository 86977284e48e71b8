"""The one server interceptor: request ids, authentication, error mapping, metrics.

Servicers and core code raise `LoraplexError`s; this maps them to statuses.
Anything else becomes INTERNAL with a generic message while the traceback is
logged, so internals never reach a client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import AbortError

from services.common.auth import NO_SERVICE_CALLS, KeyRing, ServiceScopes
from services.common.context import new_request_id, principal_var, request_id_var
from services.common.errors import GENERIC_INTERNAL_MESSAGE, LoraplexError
from services.common.metrics import RPC_SECONDS, RPC_TOTAL
from services.common.readiness import Readiness

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
PUBLIC_METHOD_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class _Call:
    """Bookkeeping for one RPC: context vars in, metrics and logs out."""

    def __init__(
        self,
        method: str,
        keyring: KeyRing,
        scopes: ServiceScopes,
        context: grpc.aio.ServicerContext,
        readiness: Readiness | None = None,
    ):
        self.method = method
        self.keyring = keyring
        self.scopes = scopes
        self.readiness = readiness
        self.context = context
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()

    def enter(self) -> None:
        metadata = {m.key: m.value for m in self.context.invocation_metadata() or ()}
        request_id = metadata.get(REQUEST_ID_HEADER) or new_request_id()
        request_id_var.set(request_id[:64])
        principal_var.set(None)
        principal = self.keyring.authenticate(metadata)
        self.scopes.check(principal, self.method)
        principal_var.set(principal)
        if self.readiness is not None:  # after authentication, so the log names the caller
            self.readiness.check()

    async def fail(self, exc: BaseException) -> None:
        trailing = ((REQUEST_ID_HEADER, request_id_var.get()),)
        if isinstance(exc, LoraplexError):
            self.code = exc.code
            log.info("%s -> %s: %s", self.method, exc.code.name, exc.message)
            await self.context.abort(exc.code, exc.message, trailing)
        self.code = grpc.StatusCode.INTERNAL
        log.error("%s failed", self.method, exc_info=exc)
        await self.context.abort(grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE, trailing)

    def finish(self, cancelled: bool = False) -> None:
        if cancelled:
            self.code = grpc.StatusCode.CANCELLED
        RPC_TOTAL.labels(self.method, self.code.name).inc()
        RPC_SECONDS.labels(self.method).observe(time.perf_counter() - self.started)


def _wrap_unary_response(
    behavior: Callable[[Any, Any], Awaitable[Any]],
    method: str,
    keyring: KeyRing,
    scopes: ServiceScopes,
    readiness: Readiness | None = None,
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _Call(method, keyring, scopes, context, readiness)
        cancelled = False
        try:
            call.enter()
            return await behavior(request, context)
        except (AbortError, asyncio.CancelledError) as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            raise
        except Exception as exc:
            await call.fail(exc)
        finally:
            call.finish(cancelled)

    return wrapped


def _wrap_stream_response(
    behavior: Callable[[Any, Any], AsyncIterator[Any]],
    method: str,
    keyring: KeyRing,
    scopes: ServiceScopes,
    readiness: Readiness | None = None,
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _Call(method, keyring, scopes, context, readiness)
        cancelled = False
        try:
            call.enter()
            async for response in behavior(request, context):
                yield response
        except (AbortError, asyncio.CancelledError, GeneratorExit) as exc:
            cancelled = not isinstance(exc, AbortError)
            raise
        except Exception as exc:
            await call.fail(exc)
        finally:
            call.finish(cancelled)

    return wrapped


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every business RPC; health and reflection pass through untouched, keyless.

    With a `readiness` gate, a business RPC that arrives before the service is ready
    is refused with UNAVAILABLE (after authentication, so the log names the tenant).
    """

    def __init__(
        self,
        keyring: KeyRing,
        scopes: ServiceScopes = NO_SERVICE_CALLS,
        readiness: Readiness | None = None,
    ) -> None:
        self._keyring = keyring
        self._scopes = scopes
        self._readiness = readiness

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if method.startswith(PUBLIC_METHOD_PREFIXES):
            return handler
        call = (method, self._keyring, self._scopes, self._readiness)
        serde = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary_response(handler.unary_unary, *call),
                **serde,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary_response(handler.stream_unary, *call),
                **serde,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream_response(handler.unary_stream, *call),
                **serde,
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream_response(handler.stream_stream, *call),
            **serde,
        )
