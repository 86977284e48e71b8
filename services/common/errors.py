"""One exception vocabulary for every service, mapped to statuses in one place.

Business code raises these; `public_error` turns any exception into what a client
may see: a gRPC status (the interceptor) or an HTTP status with OpenAI's error JSON
(`services.common.http`). Messages go to clients, so they must say what to fix and
never name internals (paths, SQL, stack frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc


class LoraplexError(Exception):
    """Base of all errors a client may see; `code` is the gRPC status sent.

    `param` names the request field at fault, when one is (OpenAI's `error.param`).
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    #: The HTTP status, where it is not the one `code` maps to (e.g. 413 for a body).
    http_status: int | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidArgument(LoraplexError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(LoraplexError):
    """Absent, or owned by another tenant: the two must look the same."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(LoraplexError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(LoraplexError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LoraplexError):
    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(LoraplexError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(LoraplexError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class TooLarge(ResourceExhausted):
    """A request bigger than the server accepts (HTTP 413)."""

    http_status = 413


class Aborted(LoraplexError):
    code = grpc.StatusCode.ABORTED


class DataLoss(LoraplexError):
    """Stored data no longer matches its checksum: corruption, not a client error."""

    code = grpc.StatusCode.DATA_LOSS


class Unavailable(LoraplexError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(LoraplexError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(LoraplexError):
    code = grpc.StatusCode.CANCELLED


GENERIC_INTERNAL_MESSAGE = "internal error; the server logged the details"


#: gRPC code → HTTP status, after Google's mapping (google.rpc.Code).
_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_HTTP_TO_GRPC = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass(frozen=True)
class PublicError:
    """What a client is told of a failure, on either transport."""

    code: grpc.StatusCode
    message: str
    param: str | None = None
    http_override: int | None = None

    @property
    def http_status(self) -> int:
        return self.http_override or _HTTP.get(self.code, 500)

    def openai_body(self) -> dict[str, Any]:
        """OpenAI's error JSON: `{"error": {"message", "type", "param", "code"}}`.

        Types as OpenAI sends them: `invalid_request_error` for a client's fault,
        `rate_limit_exceeded` for 429, `server_error` for the server's; `code` is the
        gRPC status in lower case (`not_found`), `invalid_api_key` for a refused key.
        """
        status = self.http_status
        kind = (
            "server_error"
            if status >= 500
            else "rate_limit_exceeded"
            if status == 429
            else "invalid_request_error"
        )
        code = "invalid_api_key" if self.code is grpc.StatusCode.UNAUTHENTICATED else None
        return {
            "error": {
                "message": self.message,
                "type": kind,
                "param": self.param,
                "code": code or self.code.name.lower(),
            }
        }


def public_error(exc: BaseException) -> PublicError:
    """A `LoraplexError` as itself; anything else INTERNAL with a generic message."""
    if isinstance(exc, LoraplexError):
        return PublicError(exc.code, exc.message, exc.param, exc.http_status)
    return PublicError(grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE)


def code_for_http(status: int) -> grpc.StatusCode:
    """The gRPC code an HTTP status stands for (metrics label both transports alike)."""
    if status < 400:
        return grpc.StatusCode.OK
    return _HTTP_TO_GRPC.get(status, grpc.StatusCode.INTERNAL)
