"""gRPC server bootstrap: health, reflection, keepalive, limits, TLS, graceful shutdown.

A service plugs in as a `ServiceApp` (in practice a `services.common.kit.Service`):
it registers its servicers, opens its resources (database, index, engine) before it
is reported ready, and closes them after the server has drained. Until the app's
`start()` returns, the readiness gate answers UNAVAILABLE on every business RPC.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.auth import NO_SERVICE_CALLS, KeyRing
from services.common.errors import LoraplexError
from services.common.interceptors import ServiceInterceptor
from services.common.logs import configure_logging
from services.common.metrics import start_metrics_server
from services.common.readiness import Readiness
from services.common.settings import ServiceSettings
from services.common.tls import server_credentials

log = logging.getLogger(__name__)


class ServiceApp(Protocol):
    """What a service gives the bootstrap."""

    #: Full gRPC service names, e.g. "loraplex.registry.v1.RegistryService".
    service_names: tuple[str, ...]

    def register(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    keepalive_ms = settings.keepalive_seconds * 1000
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 0),
    ]


class GrpcServer:
    """One running server; `""` is live from start, the service names once the app is ready."""

    def __init__(self, settings: ServiceSettings, app: ServiceApp, keyring: KeyRing | None = None):
        self.settings = settings
        self.app = app
        self.keyring = keyring or KeyRing.load(
            settings.resolved_keys_file(), settings.tenant_keys, settings.service_keys
        )
        self.health = health.aio.HealthServicer()
        self.readiness: Readiness = getattr(app, "readiness", None) or Readiness(
            f"the {settings.service_name} service is starting; retry shortly"
        )
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._stopped = False

    async def start(self) -> int:
        server = grpc.aio.server(
            # An app's optional `service_scopes` says what other services' keys may call.
            interceptors=[
                ServiceInterceptor(
                    self.keyring,
                    getattr(self.app, "service_scopes", NO_SERVICE_CALLS),
                    self.readiness,
                )
            ],
            options=server_options(self.settings),
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
            migration_thread_pool=ThreadPoolExecutor(max_workers=2),
        )
        self.app.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (*self.app.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = f"{self.settings.host}:{self.settings.port}"
        credentials = server_credentials(
            self.settings.tls_cert_file,
            self.settings.tls_key_file,
            self.settings.tls_client_ca_file,
        )
        if credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, credentials)
        self._server = server
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for name in self.app.service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        log.info("%s listening on %s:%d", self.settings.service_name, self.settings.host, self.port)
        await self.app.start()
        self.readiness.open()
        for name in self.app.service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if not self.keyring:
            log.warning("no API keys configured: every call will be refused until one is added")
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first so balancers drain, then stop(grace), then close resources."""
        if self._stopped or self._server is None:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        await self._server.stop(self.settings.grace_seconds if grace is None else grace)
        await self.app.close()
        log.info("%s stopped", self.settings.service_name)

    async def wait_for_termination(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()


async def serve(settings: ServiceSettings, app: ServiceApp) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    start_metrics_server(settings.metrics_port, settings.host)
    server = GrpcServer(settings, app)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    try:
        await server.start()
    except BaseException:
        log.exception("%s failed to start", settings.service_name)
        await server.stop(grace=0)
        raise
    await stop_requested.wait()
    log.info("shutdown requested; draining for up to %.0fs", settings.grace_seconds)
    await server.stop()


def run(settings: ServiceSettings, app_factory: Callable[[ServiceSettings], ServiceApp]) -> None:
    """Entry point body for `python -m services.<svc>`; exits 1 if the service cannot start."""
    configure_logging(settings.log_level, settings.log_json)
    try:
        asyncio.run(serve(settings, app_factory(settings)))
    except KeyboardInterrupt:
        pass
    except LoraplexError as error:  # a start-up precondition, e.g. no model imported
        log.error("%s cannot start: %s", settings.service_name, error.message)
        raise SystemExit(1) from None
