"""Test helpers: real servers in-process on port 0, with keys for a few tenants."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from services.common.auth import KeyRing
from services.common.channels import acting_for, open_channel
from services.common.server import GrpcServer, ServiceApp
from services.common.settings import ServiceSettings

TEST_TENANT_KEYS = {"acme": "lpx_test_acme_key", "globex": "lpx_test_globex_key"}
TEST_SERVICE_KEYS = {"inference": "lpx_test_inference_key", "training": "lpx_test_training_key"}


def test_keyring() -> KeyRing:
    return KeyRing.load(
        tenant_keys=",".join(f"{t}:{k}" for t, k in TEST_TENANT_KEYS.items()),
        service_keys=",".join(f"{s}:{k}" for s, k in TEST_SERVICE_KEYS.items()),
    )


def tenant_metadata(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TEST_TENANT_KEYS[tenant]}"),)


def service_metadata(service: str, tenant: str) -> tuple[tuple[str, str], ...]:
    return acting_for(TEST_SERVICE_KEYS[service], tenant)


@dataclass
class RunningServer:
    server: GrpcServer
    channel: grpc.aio.Channel

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@contextlib.asynccontextmanager
async def running_server(
    settings: ServiceSettings, app: ServiceApp, keyring: KeyRing | None = None
) -> AsyncIterator[RunningServer]:
    """Starts `app` on 127.0.0.1:0 and yields it with an open channel; stops it after."""
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": 0, "metrics_port": 0})
    server = GrpcServer(settings, app, keyring or test_keyring())
    await server.start()
    channel = open_channel(f"127.0.0.1:{server.port}")
    try:
        yield RunningServer(server, channel)
    finally:
        await channel.close()
        await server.stop(grace=1)
