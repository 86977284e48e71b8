"""One exception vocabulary for every service, mapped to gRPC status codes in one place.

Business code raises these; the error interceptor turns them into statuses. Their
messages go to clients, so they must say what to fix and never name internals
(paths, SQL, stack frames).
"""

from __future__ import annotations

import grpc


class LoraplexError(Exception):
    """Base of all errors a client may see; `code` is the gRPC status sent."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
