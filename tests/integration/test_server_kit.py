"""The shared server kit on a real loopback server: auth, error mapping, health, shutdown."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth import ServiceScopes
from services.common.context import current_principal
from services.common.errors import GENERIC_INTERNAL_MESSAGE, NotFound
from services.common.settings import ServiceSettings
from services.common.testing import running_server, service_metadata, tenant_metadata

pytestmark = pytest.mark.integration

SERVICE = "test.v1.EchoService"


def _identity(data: bytes) -> bytes:
    return data


class EchoApp:
    """A raw-bytes service: enough to drive every interceptor path."""

    service_names = (SERVICE,)
    service_scopes = ServiceScopes(SERVICE, inference=("WhoAmI",))

    def __init__(self) -> None:
        self.closed = False

    def register(self, server: grpc.aio.Server) -> None:
        async def whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            principal = current_principal()
            return f"{principal.kind}:{principal.name}:{principal.tenant}".encode()

        async def missing(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            raise NotFound("adapter 'acme/x' not found")

        async def crash(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            raise RuntimeError("secret path /var/lib/x leaked?")

        async def count(request: bytes, context: grpc.aio.ServicerContext):
            for i in range(int(request.decode())):
                yield str(i).encode()
            raise NotFound("ran out")

        def unary(fn):
            return grpc.unary_unary_rpc_method_handler(fn, _identity, _identity)

        handlers = {
            "WhoAmI": unary(whoami),
            "Missing": unary(missing),
            "Crash": unary(crash),
            "Count": grpc.unary_stream_rpc_method_handler(count, _identity, _identity),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


async def _call(channel: grpc.aio.Channel, method: str, body: bytes, metadata=()) -> bytes:
    rpc = channel.unary_unary(f"/{SERVICE}/{method}", _identity, _identity)
    return await rpc(body, metadata=metadata, timeout=5)


async def test_tenant_and_service_identities_and_error_mapping():
    app = EchoApp()
    async with running_server(ServiceSettings(), app) as srv:
        assert await _call(srv.channel, "WhoAmI", b"", tenant_metadata("acme")) == (
            b"tenant:acme:acme"
        )
        # A service key acts for the tenant it names.
        who = await _call(srv.channel, "WhoAmI", b"", service_metadata("inference", "globex"))
        assert who == b"service:inference:globex"
        # ... but only for the RPCs its service needs here.
        for method, service in (("WhoAmI", "training"), ("Missing", "inference")):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _call(srv.channel, method, b"", service_metadata(service, "globex"))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(srv.channel, "WhoAmI", b"")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(srv.channel, "WhoAmI", b"", (("authorization", "Bearer nope"),))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # A tenant key can never act for another tenant.
        spoof = (*tenant_metadata("acme"), ("x-loraplex-tenant", "globex"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(srv.channel, "WhoAmI", b"", spoof)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

        # A service key must say whom it acts for.
        bare = (("authorization", "Bearer lpx_test_inference_key"),)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(srv.channel, "WhoAmI", b"", bare)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(srv.channel, "Missing", b"", tenant_metadata("acme"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "adapter 'acme/x' not found"

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(srv.channel, "Crash", b"", tenant_metadata("acme"))
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert err.value.details() == GENERIC_INTERNAL_MESSAGE

        stream = srv.channel.unary_stream(f"/{SERVICE}/Count", _identity, _identity)
        call = stream(b"3", metadata=tenant_metadata("acme"), timeout=5)
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for item in call:
                got.append(item)
        assert got == [b"0", b"1", b"2"]
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_is_open_and_flips_on_shutdown():
    app = EchoApp()
    async with running_server(ServiceSettings(), app) as srv:
        stub = health_pb2_grpc.HealthStub(srv.channel)
        live = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        ready = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
        assert live.status == ready.status == health_pb2.HealthCheckResponse.SERVING

        watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        await srv.server.stop(grace=1)
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert app.closed
