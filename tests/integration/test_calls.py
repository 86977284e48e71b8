"""The one way to call another service, against real servers on loopback.

Retry with backoff on UNAVAILABLE (and only then), the remote's domain errors
back as the same domain errors, the service key and tenant in metadata, TLS, and
the readiness gate of a service that is still starting.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common import testing
from services.common.auth import ServiceScopes
from services.common.calls import CallPolicy, Remote
from services.common.context import current_principal
from services.common.errors import DeadlineExceeded, NotFound, Unavailable
from services.common.kit import Service
from services.common.probes import free_port
from services.common.settings import ClientTlsSettings, ServiceSettings
from services.common.testing import TEST_SERVICE_KEYS, running_server
from tests.integration.test_tls import make_pki

pytestmark = pytest.mark.integration

SERVICE = "test.v1.FlakyService"
FAST = CallPolicy(timeout=5, attempts=4, first_backoff=0.01, max_backoff=0.05)


def _identity(data: bytes) -> bytes:
    return data


class FlakyApp(Service):
    """Answers UNAVAILABLE `flaky` times, then who called; `Missing` is always NOT_FOUND."""

    service_names = (SERVICE,)
    starting_message = "the flaky service is warming up; retry shortly"
    service_scopes = ServiceScopes(
        SERVICE, inference=("WhoAmI", "Missing", "Count", "Slow"), training=("WhoAmI",)
    )

    def __init__(self, settings: ServiceSettings, flaky: int = 0) -> None:
        super().__init__(settings)
        self.flaky = flaky
        self.calls: dict[str, int] = {}
        self.started = asyncio.Event()

    def register(self, server: grpc.aio.Server) -> None:
        async def whoami(request: bytes, context) -> bytes:
            self.calls["WhoAmI"] = self.calls.get("WhoAmI", 0) + 1
            if self.calls["WhoAmI"] <= self.flaky:
                raise Unavailable("busy")
            principal = current_principal()
            return f"{principal.name}:{principal.tenant}:{request.decode()}".encode()

        async def missing(request: bytes, context) -> bytes:
            self.calls["Missing"] = self.calls.get("Missing", 0) + 1
            raise NotFound("adapter 'acme/x' not found")

        async def count(request: bytes, context):
            self.calls["Count"] = self.calls.get("Count", 0) + 1
            if self.calls["Count"] <= self.flaky:
                raise Unavailable("busy")
            for i in range(int(request.decode())):
                yield str(i).encode()

        async def slow(request: bytes, context) -> bytes:
            await asyncio.sleep(5)
            return b""

        def unary(fn):
            return grpc.unary_unary_rpc_method_handler(fn, _identity, _identity)

        handlers = {
            "WhoAmI": unary(whoami),
            "Missing": unary(missing),
            "Slow": unary(slow),
            "Count": grpc.unary_stream_rpc_method_handler(count, _identity, _identity),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    async def start(self) -> None:
        await self.started.wait()


def _remote(target: str, key: str = TEST_SERVICE_KEYS["inference"], tls=None) -> Remote:
    return Remote("flaky", target, key, tls, FAST)


def _unary(remote: Remote, method: str):
    return remote.channel.unary_unary(f"/{SERVICE}/{method}", _identity, _identity)


async def _ready_app(flaky: int = 0) -> FlakyApp:
    app = FlakyApp(ServiceSettings(service_name="flaky"), flaky)
    app.started.set()
    return app


async def test_unavailable_is_retried_and_the_tenant_travels():
    app = await _ready_app(flaky=2)
    async with running_server(app.settings, app) as srv:
        remote = _remote(srv.target)
        reply = await remote.call(_unary(remote, "WhoAmI"), b"hi", "globex")
        assert reply == b"inference:globex:hi"
        assert app.calls["WhoAmI"] == 3
        await remote.close()


async def test_retries_stop_after_the_policy_and_answer_unavailable():
    app = await _ready_app(flaky=10)
    async with running_server(app.settings, app) as srv:
        remote = _remote(srv.target)
        with pytest.raises(Unavailable, match="flaky is unavailable"):
            await remote.call(_unary(remote, "WhoAmI"), b"", "acme")
        assert app.calls["WhoAmI"] == FAST.attempts
        app.calls.clear()
        with pytest.raises(Unavailable):
            await remote.call(_unary(remote, "WhoAmI"), b"", "acme", retry=False)
        assert app.calls["WhoAmI"] == 1
        await remote.close()


async def test_domain_errors_are_not_retried_and_keep_code_and_message():
    app = await _ready_app()
    async with running_server(app.settings, app) as srv:
        remote = _remote(srv.target)
        with pytest.raises(NotFound) as err:
            await remote.call(_unary(remote, "Missing"), b"", "acme")
        assert err.value.message == "adapter 'acme/x' not found"
        assert app.calls["Missing"] == 1
        await remote.close()


async def test_a_refused_key_and_a_missed_deadline():
    app = await _ready_app()
    async with running_server(app.settings, app) as srv:
        remote = _remote(srv.target, key="lpx_not_a_key")
        with pytest.raises(Unavailable, match="does not accept this service's key"):
            await remote.call(_unary(remote, "WhoAmI"), b"", "acme")
        await remote.close()
        remote = _remote(srv.target)

        with pytest.raises(DeadlineExceeded):
            await remote.call(_unary(remote, "Slow"), b"", "acme", deadline=0.3)
        await remote.close()


async def test_a_stream_is_retried_until_its_first_message():
    app = await _ready_app(flaky=1)
    async with running_server(app.settings, app) as srv:
        remote = _remote(srv.target)
        method = remote.channel.unary_stream(f"/{SERVICE}/Count", _identity, _identity)
        got = [m async for m in remote.stream(method, b"3", "acme")]
        assert got == [b"0", b"1", b"2"] and app.calls["Count"] == 2
        await remote.close()


async def test_nothing_listening_is_unavailable_after_the_retries():
    remote = _remote(f"127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable, match="flaky is unavailable"):
        await remote.call(_unary(remote, "WhoAmI"), b"", "acme")
    await remote.close()


async def test_mutual_tls_from_client_settings(tmp_path):
    make_pki(tmp_path)
    settings = ServiceSettings(
        service_name="flaky",
        tls_cert_file=tmp_path / "server.crt",
        tls_key_file=tmp_path / "server.key",
        tls_client_ca_file=tmp_path / "ca.crt",
    )
    app = FlakyApp(settings)
    app.started.set()
    async with running_server(settings, app) as srv:
        tls = ClientTlsSettings(
            ca_file=tmp_path / "ca.crt",
            cert_file=tmp_path / "client.crt",
            key_file=tmp_path / "client.key",
        )
        remote = _remote(srv.target, tls=tls)
        assert await remote.call(_unary(remote, "WhoAmI"), b"x", "acme") == b"inference:acme:x"
        await remote.close()
        no_cert = _remote(srv.target, tls=ClientTlsSettings(ca_file=tmp_path / "ca.crt"))
        with pytest.raises(Unavailable):
            await no_cert.call(_unary(no_cert, "WhoAmI"), b"x", "acme")
        await no_cert.close()


async def test_every_business_rpc_waits_for_readiness_and_the_kit_closes():
    app = FlakyApp(ServiceSettings(service_name="flaky"))
    async with testing.starting_server(app.settings, app) as (server, starting):
        remote = Remote("flaky", f"127.0.0.1:{server.port}", TEST_SERVICE_KEYS["inference"])
        for method in ("WhoAmI", "Missing"):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _unary(remote, method)(b"", metadata=testing.tenant_metadata("acme"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert err.value.details() == "the flaky service is warming up; retry shortly"
        assert app.calls == {}  # nothing reached the servicer
        app.started.set()
        await starting
        assert await remote.call(_unary(remote, "WhoAmI"), b"", "acme") == b"inference:acme:"
        await remote.close()
    with pytest.raises(RuntimeError):
        app.kit.executor.submit(print)
