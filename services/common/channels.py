"""Outbound channels from one service to another, with the service key and deadlines.

A service acts for the tenant of the request it is serving: every call names
that tenant in metadata next to the service's own key.

Every channel balances round-robin over all the addresses its target resolves to: on
Kubernetes point it at a headless Service (`dns:///registry-headless:50051`, or the
plain `registry-headless:50051`) and each call goes to the next pod; locally a comma
list of replicas (`127.0.0.1:50051,127.0.0.1:50061`) becomes a static `ipv4:` target.
"""

from __future__ import annotations

import grpc

from loraplex.routing import ROUND_ROBIN_OPTION, grpc_target
from services.common.auth import ACT_FOR_TENANT_HEADER, AUTHORIZATION_HEADER
from services.common.context import request_id_var
from services.common.interceptors import REQUEST_ID_HEADER
from services.common.settings import ClientTlsSettings
from services.common.tls import channel_credentials

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ROUND_ROBIN_OPTION,
]


def open_channel(target: str, tls: ClientTlsSettings | None = None) -> grpc.aio.Channel:
    """`target`: one address, a comma list of replicas' IP addresses, or any gRPC target."""
    target = grpc_target(target)
    tls = tls or ClientTlsSettings()
    credentials = channel_credentials(tls.ca_file, tls.cert_file, tls.key_file)
    options = list(CHANNEL_OPTIONS)
    if tls.server_name_override:
        options.append(("grpc.ssl_target_name_override", tls.server_name_override))
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)


def acting_for(service_key: str, tenant: str) -> tuple[tuple[str, str], ...]:
    """Call metadata for a service-to-service call on behalf of `tenant`."""
    return (
        (AUTHORIZATION_HEADER, f"Bearer {service_key}"),
        (ACT_FOR_TENANT_HEADER, tenant),
        (REQUEST_ID_HEADER, request_id_var.get()),
    )
