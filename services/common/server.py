"""The server bootstrap: an app's front ends started, made ready and drained together.

A service plugs in as a `ServiceApp` (in practice a `services.common.kit.Service`):
it registers its servicers, lists its front ends (gRPC always; HTTP ones it adds,
`services.common.http.HttpFrontEnd`), opens its resources (database, index, engine)
before it is reported ready, and closes them after every front end has drained.
Until the app's `start()` returns, the readiness gate refuses every business call
on every front end (UNAVAILABLE, HTTP 503).

Order: bind every front end (gate closed) → `app.start()` → gate open, health
SERVING → … → SIGTERM: health NOT_SERVING → all front ends drain together for up
to `grace_seconds` → `app.close()`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.admission import Admission
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
    """What a service gives the bootstrap (optional: `service_scopes`, `readiness`,
    `kit`, `front_ends`; a `kit.Service` has them all)."""

    #: Full gRPC service names, e.g. "loraplex.registry.v1.RegistryService".
    service_names: tuple[str, ...]

    def register(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class FrontEnd(Protocol):
    """One way in to the app (a gRPC server, an HTTP server), on its own port."""

    port: int

    async def start(self, server: Server) -> None:
        """Binds and serves; business calls meet the closed readiness gate until ready."""

    async def ready(self) -> None:
        """The app is ready: tell probes and balancers."""

    async def not_ready(self) -> None:
        """Shutdown began: tell probes and balancers, before draining."""

    async def stop(self, grace: float) -> None:
        """Stops taking calls; in-flight ones get up to `grace` seconds."""


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


class GrpcFrontEnd:
    """The gRPC server: the admission interceptor, health, reflection, keepalive, TLS.

    Health `""` is SERVING (live) from the start; the app's service names turn
    SERVING once it is ready and NOT_SERVING when shutdown begins.
    """

    def __init__(self) -> None:
        self.port = 0
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._names: tuple[str, ...] = ()

    async def start(self, server: Server) -> None:
        settings, app = server.settings, server.app
        self._names = tuple(app.service_names)
        grpc_server = grpc.aio.server(
            interceptors=[ServiceInterceptor(server.admission)],
            options=server_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            migration_thread_pool=ThreadPoolExecutor(max_workers=2),
        )
        app.register(grpc_server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, grpc_server)
        reflection.enable_server_reflection(
            (*self._names, health.SERVICE_NAME, reflection.SERVICE_NAME), grpc_server
        )
        address = f"{settings.host}:{settings.port}"
        credentials = server_credentials(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        )
        if credentials is None:
            self.port = grpc_server.add_insecure_port(address)
        else:
            self.port = grpc_server.add_secure_port(address, credentials)
        self._server = grpc_server
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for name in self._names:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await grpc_server.start()
        log.info("%s gRPC on %s:%d", settings.service_name, settings.host, self.port)

    async def ready(self) -> None:
        for name in self._names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def not_ready(self) -> None:
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            await self._server.stop(grace)

    async def wait_for_termination(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()


class Server:
    """One running app behind all its front ends, sharing one admission.

    `keyring` overrides the kit's key ring (tests); an app without a kit gets one
    loaded from settings.
    """

    def __init__(self, settings: ServiceSettings, app: ServiceApp, keyring: KeyRing | None = None):
        self.settings = settings
        self.app = app
        kit = getattr(app, "kit", None)
        if keyring is not None and kit is not None:
            kit.keys = keyring
        self.keys: KeyRing = keyring or (
            kit.keys
            if kit is not None
            else KeyRing.load(
                settings.resolved_keys_file(), settings.tenant_keys, settings.service_keys
            )
        )
        self.readiness: Readiness = getattr(app, "readiness", None) or Readiness(
            f"the {settings.service_name} service is starting; retry shortly"
        )
        self.admission = Admission(
            self.keys,
            # An app's optional `service_scopes` says what other services' keys may call.
            getattr(app, "service_scopes", NO_SERVICE_CALLS),
            self.readiness,
            kit.blocking if kit is not None else None,
        )
        front_ends: Sequence[Any] = getattr(app, "front_ends", None) or (GrpcFrontEnd(),)
        self.front_ends: list[FrontEnd] = list(front_ends)
        self.grpc: GrpcFrontEnd = next(f for f in self.front_ends if isinstance(f, GrpcFrontEnd))
        #: Set once every front end is bound (its port known), before the app is ready.
        self.bound = asyncio.Event()
        self._started: list[FrontEnd] = []
        self._stopped = False

    @property
    def port(self) -> int:
        """The gRPC port."""
        return self.grpc.port

    @property
    def health(self) -> health.aio.HealthServicer:
        return self.grpc.health

    async def start(self) -> int:
        """Binds every front end, starts the app, then opens the gate; returns the gRPC port."""
        for front_end in self.front_ends:
            await front_end.start(self)
            self._started.append(front_end)
        self.bound.set()
        await self.app.start()
        self.readiness.open()
        for front_end in self.front_ends:
            await front_end.ready()
        if not self.keys:
            log.warning("no API keys configured: every call will be refused until one is added")
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Not ready everywhere first so balancers drain, then every front end drains
        (concurrently, up to `grace`), then the app closes its resources."""
        if self._stopped or not self._started:
            return
        self._stopped = True
        grace = self.settings.grace_seconds if grace is None else grace
        for front_end in self._started:
            await front_end.not_ready()
        await asyncio.gather(*(front_end.stop(grace) for front_end in self._started))
        await self.app.close()
        log.info("%s stopped", self.settings.service_name)


async def serve(settings: ServiceSettings, app: ServiceApp) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    start_metrics_server(settings.metrics_port, settings.host)
    server = Server(settings, app)
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
