"""Per-request context (request id, caller) carried in contextvars.

Admission (`services.common.admission`) sets it once per request on every front
end; logging and core code read it without threading a context object through.
"""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass
from enum import StrEnum

from services.common.errors import PermissionDenied, Unauthenticated

ACT_FOR_TENANT_HEADER = "x-loraplex-tenant"
#: The request id a caller may send and every answer echoes (gRPC trailer, HTTP header).
REQUEST_ID_HEADER = "x-request-id"


class PrincipalKind(StrEnum):
    TENANT = "tenant"
    SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant, or a service acting for the tenant it names (or for none)."""

    kind: PrincipalKind
    name: str
    tenant: str

    @property
    def is_service(self) -> bool:
        return self.kind is PrincipalKind.SERVICE


request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "principal", default=None
)


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def current_principal() -> Principal:
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("this call needs an API key: send 'authorization: Bearer <key>'")
    return principal


def current_tenant() -> str:
    principal = current_principal()
    if not principal.tenant:
        raise PermissionDenied(
            f"service key {principal.name!r} must name the tenant it acts for in"
            f" '{ACT_FOR_TENANT_HEADER}' metadata"
        )
    return principal.tenant


def current_service() -> str:
    """The calling service, for service-level RPCs; tenant keys are refused."""
    principal = current_principal()
    if not principal.is_service:
        raise PermissionDenied("only a service key may call this; tenants use WatchAdapters")
    return principal.name
