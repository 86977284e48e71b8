"""The gRPC adapter of admission: one server interceptor for every business RPC.

Each call is admitted by `services.common.admission` (request id, key, scopes,
readiness), its errors mapped by `services.common.errors.public_error` (a
`LoraplexError` keeps its code and message; anything else is INTERNAL with a generic
message while the traceback is logged), and counted in the shared metrics. Request
bytes that do not decode as the method's message are INVALID_ARGUMENT, not UNKNOWN.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import AbortError

from services.common.admission import Admission, Call
from services.common.context import REQUEST_ID_HEADER, request_id_var
from services.common.errors import InvalidArgument

__all__ = ["PUBLIC_METHOD_PREFIXES", "REQUEST_ID_HEADER", "ServiceInterceptor"]

log = logging.getLogger(__name__)

PUBLIC_METHOD_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class _Undecodable:
    """Stands in for a request whose bytes did not parse, until admission has run."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"the request is not a valid {self.type_name} message: it is truncated or holds"
            " a string that is not UTF-8; send bytes serialized from that message"
        )


def _lenient(deserialize: Callable[[bytes], Any] | None, method: str) -> Callable | None:
    """The method's deserializer, answering `_Undecodable` instead of raising.

    grpc turns a raising deserializer into UNKNOWN before any interceptor code runs;
    this way the call is still authenticated first and then refused with a status
    the client can act on.
    """
    if deserialize is None:
        return None
    message_type = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    type_name = getattr(message_type, "full_name", "") or f"{method} request"

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # DecodeError, or anything a custom deserializer raises
            return _Undecodable(type_name)

    return parse


def _checked(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise request.error()
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request)


async def _enter(call: Call, context: grpc.aio.ServicerContext) -> None:
    """Admits the call; its request id goes back in the trailers, whatever the outcome."""
    try:
        await call.enter({m.key: m.value for m in context.invocation_metadata() or ()})
    finally:
        context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id_var.get()),))


async def _abort(call: Call, context: grpc.aio.ServicerContext, exc: Exception) -> None:
    error = call.failed(exc)
    call.finish()  # before the status leaves: the client may read the metrics next
    await context.abort(error.code, error.message, ((REQUEST_ID_HEADER, request_id_var.get()),))


def _wrap_unary_response(
    behavior: Callable[[Any, Any], Awaitable[Any]],
    method: str,
    admission: Admission,
    streaming_request: bool,
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = Call(admission, method)
        cancelled = False
        try:
            await _enter(call, context)
            request = _checked_stream(request) if streaming_request else _checked(request)
            return await behavior(request, context)
        except (AbortError, asyncio.CancelledError) as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            raise
        except Exception as exc:
            await _abort(call, context, exc)
        finally:
            call.finish(cancelled)

    return wrapped


def _wrap_stream_response(
    behavior: Callable[[Any, Any], AsyncIterator[Any]],
    method: str,
    admission: Admission,
    streaming_request: bool,
) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = Call(admission, method)
        cancelled = False
        try:
            await _enter(call, context)
            request = _checked_stream(request) if streaming_request else _checked(request)
            async for response in behavior(request, context):
                yield response
        except (AbortError, asyncio.CancelledError, GeneratorExit) as exc:
            cancelled = not isinstance(exc, AbortError)
            raise
        except Exception as exc:
            await _abort(call, context, exc)
        finally:
            call.finish(cancelled)

    return wrapped


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Admits every business RPC; health and reflection pass through untouched, keyless."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

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
        serde = {
            "request_deserializer": _lenient(handler.request_deserializer, method),
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary_response(handler.unary_unary, method, self._admission, False),
                **serde,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary_response(handler.stream_unary, method, self._admission, True),
                **serde,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream_response(handler.unary_stream, method, self._admission, False),
                **serde,
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream_response(handler.stream_stream, method, self._admission, True),
            **serde,
        )
