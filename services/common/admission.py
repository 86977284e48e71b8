"""Admission, written once for every front end: who calls, may they, is the service ready.

`Admission.admit(headers, route)` authenticates the caller's key (a tenant, or a
service acting for one), applies the service scopes, sets the request id and the
caller in the context vars, and checks the readiness gate. `Call` wraps one request
from admission to its metrics. The gRPC interceptor (`services.common.interceptors`)
and the HTTP middleware (`services.common.http`) are thin adapters over these two and
`services.common.errors.public_error`, so both transports refuse, log and count alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from services.common.auth import NO_SERVICE_CALLS, Blocking, KeyRing, ServiceScopes
from services.common.context import (
    REQUEST_ID_HEADER,
    Principal,
    new_request_id,
    principal_var,
    request_id_var,
)
from services.common.errors import LoraplexError, PublicError, public_error
from services.common.metrics import RPC_SECONDS, RPC_TOTAL
from services.common.readiness import Readiness

log = logging.getLogger(__name__)

#: The longest request id accepted from a caller; longer ones are cut.
MAX_REQUEST_ID = 64


@dataclass(frozen=True)
class Admitted:
    principal: Principal
    request_id: str


class Admission:
    """One per process: the key ring, the app's service scopes and its readiness gate.

    `blocking` runs the keys file's re-reads off the loop (the kit's executor).
    """

    def __init__(
        self,
        keys: KeyRing,
        scopes: ServiceScopes = NO_SERVICE_CALLS,
        readiness: Readiness | None = None,
        blocking: Blocking | None = None,
    ) -> None:
        self.keys = keys
        self.scopes = scopes
        self.readiness = readiness
        self.blocking = blocking

    async def admit(self, headers: Mapping[str, str], route: str) -> Admitted:
        """Authenticates and admits one request to `route`, or raises a `LoraplexError`.

        `headers` have lower-case names (`authorization`, `x-loraplex-tenant`,
        `x-request-id`); `route` is what the scopes name: `/pkg.Service/Method` for
        gRPC, `METHOD /template` for HTTP (`GET /v1/models/{model}`). The readiness
        gate is checked after authentication, so the log of a refused early call names
        the caller.
        """
        request_id = (headers.get(REQUEST_ID_HEADER) or new_request_id())[:MAX_REQUEST_ID]
        request_id_var.set(request_id)
        principal_var.set(None)
        principal = await self.keys.resolve(headers, self.blocking)
        self.scopes.check(principal, route)
        principal_var.set(principal)
        if self.readiness is not None:
            self.readiness.check()
        return Admitted(principal, request_id)


class Call:
    """One request on any front end: admission in; logs, status and metrics out."""

    def __init__(self, admission: Admission, route: str) -> None:
        self.admission = admission
        self.route = route
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()
        self._counted = False

    async def enter(self, headers: Mapping[str, str]) -> Admitted:
        return await self.admission.admit(headers, self.route)

    def failed(self, exc: BaseException) -> PublicError:
        """What the client is told; a non-`LoraplexError` is logged with its traceback."""
        error = public_error(exc)
        self.code = error.code
        if isinstance(exc, LoraplexError):
            log.info("%s -> %s: %s", self.route, error.code.name, error.message)
        else:
            log.error("%s failed", self.route, exc_info=exc)
        return error

    def finish(self, cancelled: bool = False, route: str | None = None) -> None:
        """Counts the call under `route` (an HTTP route's template, known once routed), once:
        an error is counted before its status is sent, so a client that sees the error and
        then reads the metrics finds it counted."""
        if self._counted:
            return
        self._counted = True
        if cancelled:
            self.code = grpc.StatusCode.CANCELLED
        label = route or self.route
        RPC_TOTAL.labels(label, self.code.name).inc()
        RPC_SECONDS.labels(label).observe(time.perf_counter() - self.started)
