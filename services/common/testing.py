"""Test helpers: real servers in-process on port 0 (every front end), with test keys."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc

from services.common.auth import KeyRing
from services.common.channels import acting_for, open_channel
from services.common.probes import wait_until_serving
from services.common.server import Server, ServiceApp
from services.common.settings import ServiceSettings

TEST_TENANT_KEYS = {"acme": "lpx_test_acme_key", "globex": "lpx_test_globex_key"}
TEST_SERVICE_KEYS = {
    "inference": "lpx_test_inference_key",
    "training": "lpx_test_training_key",
    "gateway": "lpx_test_gateway_key",
}


def test_keyring() -> KeyRing:
    return KeyRing.load(
        tenant_keys=",".join(f"{t}:{k}" for t, k in TEST_TENANT_KEYS.items()),
        service_keys=",".join(f"{s}:{k}" for s, k in TEST_SERVICE_KEYS.items()),
    )


def tenant_metadata(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TEST_TENANT_KEYS[tenant]}"),)


def service_metadata(service: str, tenant: str) -> tuple[tuple[str, str], ...]:
    return acting_for(TEST_SERVICE_KEYS[service], tenant)


def _loopback(settings: ServiceSettings, app: ServiceApp) -> ServiceSettings:
    """The settings with every front end on 127.0.0.1, port 0, and no metrics port."""
    ports = {
        f.port_setting: 0 for f in getattr(app, "front_ends", ()) if hasattr(f, "port_setting")
    }
    return settings.model_copy(update={"host": "127.0.0.1", "port": 0, "metrics_port": 0, **ports})


def http_port(server: Server, port_setting: str) -> int:
    """The bound port of the app's HTTP front end on `port_setting`."""
    return next(f.port for f in server.front_ends if getattr(f, "port_setting", "") == port_setting)


@dataclass
class RunningServer:
    server: Server
    channel: grpc.aio.Channel

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def http_url(self, port_setting: str) -> str:
        """`http://127.0.0.1:<port>` of the HTTP front end on `port_setting`."""
        return f"http://127.0.0.1:{http_port(self.server, port_setting)}"


@contextlib.asynccontextmanager
async def running_server(
    settings: ServiceSettings, app: ServiceApp, keyring: KeyRing | None = None
) -> AsyncIterator[RunningServer]:
    """Starts `app` on 127.0.0.1:0 and yields it with an open channel; stops it after."""
    settings = _loopback(settings, app)
    server = Server(settings, app, keyring or test_keyring())
    await server.start()
    channel = open_channel(f"127.0.0.1:{server.port}")
    try:
        yield RunningServer(server, channel)
    finally:
        await channel.close()
        await server.stop(grace=1)


@contextlib.asynccontextmanager
async def starting_server(
    settings: ServiceSettings, app: ServiceApp, keyring: KeyRing | None = None
) -> AsyncIterator[tuple[Server, asyncio.Task[int]]]:
    """Starts `app` in the background; yields once its ports are bound, before it is ready.

    For tests of start-up itself (the readiness gate): the caller decides when the
    app's `start()` may finish and awaits the task; the server is stopped after.
    """
    settings = _loopback(settings, app)
    server = Server(settings, app, keyring or test_keyring())
    task = asyncio.create_task(server.start())
    bound = asyncio.create_task(server.bound.wait())
    try:
        await asyncio.wait((task, bound), return_when=asyncio.FIRST_COMPLETED)
        if not server.bound.is_set():
            await task  # start-up failed before binding: raise its error
        yield server, task
    finally:
        bound.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await server.stop(grace=1)


@contextlib.contextmanager
def server_thread(
    settings: ServiceSettings, app: ServiceApp, keyring: KeyRing | None = None
) -> Iterator[Server]:
    """Runs `app` on its own event loop in a thread, for tests that use blocking clients."""
    settings = _loopback(settings, app)
    server = Server(settings, app, keyring or test_keyring())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-server", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=120)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(grace=1), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@contextlib.contextmanager
def service_process(
    module: str, service: str, env: dict[str, str], port: int, timeout: float = 60.0
) -> Iterator[subprocess.Popen]:
    """Runs `python -m <module>` as a real OS process until ready; SIGTERM (then kill) on exit."""
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", module], env=full_env)
    try:
        wait_until_serving(f"127.0.0.1:{port}", service, timeout, process)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait(timeout=30)
