"""One app behind a gRPC and an HTTP front end: the same admission, errors and lifecycle.

Real servers on loopback ports: the gRPC side called through a generic channel, the
HTTP side (FastAPI in uvicorn, in the same event loop) through httpx.
"""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY
from pydantic import BaseModel

from services.common import testing
from services.common.auth import ServiceScopes
from services.common.context import current_principal, request_id_var
from services.common.errors import GENERIC_INTERNAL_MESSAGE, NotFound
from services.common.http import HttpFrontEnd
from services.common.kit import Service
from services.common.settings import ServiceSettings

pytestmark = pytest.mark.integration

SERVICE = "test.v1.TwoDoorService"
ACME = {"authorization": f"Bearer {testing.TEST_TENANT_KEYS['acme']}"}


class TwoDoorSettings(ServiceSettings):
    service_name: str = "twodoor"
    #: The HTTP front end's port (the setting the front end is registered with).
    http_port: int = 0


def _raw(data: bytes) -> bytes:
    return data


def _whoami() -> str:
    principal = current_principal()
    return f"{principal.kind}:{principal.name}:{principal.tenant}"


class Echo(BaseModel):
    text: str
    times: int = 1


def _http_routes(app: TwoDoorApp) -> FastAPI:
    api = FastAPI()

    @api.get("/v1/whoami")
    async def whoami() -> dict[str, str]:
        return {"who": _whoami(), "request_id": request_id_var.get()}

    @api.post("/v1/echo")
    async def echo(body: Echo) -> dict[str, str]:
        return {"text": body.text * body.times}

    @api.get("/v1/things/{name}")
    async def thing(name: str) -> dict[str, str]:
        raise NotFound(f"thing {name!r} not found")

    @api.get("/v1/crash")
    async def crash() -> dict[str, str]:
        raise RuntimeError("secret path /var/lib/x")

    @api.get("/v1/slow")
    async def slow() -> StreamingResponse:
        async def chunks():
            app.http_in_flight.set()
            for i in range(3):
                await asyncio.sleep(0.2)
                yield f"{i}\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    return api


class TwoDoorApp(Service):
    service_names = (SERVICE,)
    # HTTP routes are scoped by `METHOD /template`, in the same declaration.
    service_scopes = ServiceScopes(
        SERVICE,
        routes={"inference": ("GET /v1/whoami", "GET /v1/things/{name}")},
        inference=("WhoAmI",),
    )
    starting_message = "two doors are opening; retry shortly"

    def __init__(self, settings: TwoDoorSettings, release: asyncio.Event | None = None) -> None:
        super().__init__(settings)
        self.release = release
        self.in_flight = asyncio.Event()
        self.http_in_flight = asyncio.Event()
        self.closed = False
        self.front_ends.append(HttpFrontEnd(_http_routes(self), "http_port", max_body_bytes=1024))

    def register(self, server: grpc.aio.Server) -> None:
        async def whoami(request: bytes, context) -> bytes:
            return _whoami().encode()

        async def slow(request: bytes, context) -> bytes:
            self.in_flight.set()
            await asyncio.sleep(0.6)
            return b"done"

        async def health_like(request: health_pb2.HealthCheckRequest, context):
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

        handlers = {
            "WhoAmI": grpc.unary_unary_rpc_method_handler(whoami, _raw, _raw),
            "Slow": grpc.unary_unary_rpc_method_handler(slow, _raw, _raw),
            "Typed": grpc.unary_unary_rpc_method_handler(
                health_like,
                health_pb2.HealthCheckRequest.FromString,
                health_pb2.HealthCheckResponse.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    async def start(self) -> None:
        if self.release is not None:
            await self.release.wait()

    async def stop(self) -> None:
        self.closed = True


async def _grpc(channel: grpc.aio.Channel, method: str, body: bytes = b"", metadata=()):
    return await channel.unary_unary(f"/{SERVICE}/{method}", _raw, _raw)(
        body, metadata=metadata, timeout=5
    )


async def _grpc_error(channel, method, body=b"", metadata=()) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _grpc(channel, method, body, metadata)
    return err.value


def _trailer(error: grpc.aio.AioRpcError, name: str) -> str:
    return dict(error.trailing_metadata() or ()).get(name, "")


def _openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


async def test_one_key_ring_admits_on_both_front_ends_and_refuses_alike():
    app = TwoDoorApp(TwoDoorSettings())
    async with (
        testing.running_server(app.settings, app) as srv,
        httpx.AsyncClient(base_url=srv.http_url("http_port"), timeout=5) as http,
    ):
        # The same tenant key, the same identity, on both.
        assert await _grpc(srv.channel, "WhoAmI", metadata=testing.tenant_metadata("acme")) == (
            b"tenant:acme:acme"
        )
        response = await http.get("/v1/whoami", headers={**ACME, "x-request-id": "req-42"})
        assert response.json() == {"who": "tenant:acme:acme", "request_id": "req-42"}
        assert response.headers["x-request-id"] == "req-42"

        # The request id comes back on gRPC too, in the trailers.
        call = srv.channel.unary_unary(f"/{SERVICE}/WhoAmI", _raw, _raw)(
            b"", metadata=(*testing.tenant_metadata("acme"), ("x-request-id", "req-43"))
        )
        await call
        assert dict(await call.trailing_metadata())["x-request-id"] == "req-43"

        # An unknown key: UNAUTHENTICATED / 401 with OpenAI's error JSON.
        error = await _grpc_error(srv.channel, "WhoAmI", metadata=(("authorization", "Bearer x"),))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        response = await http.get("/v1/whoami", headers={"authorization": "Bearer x"})
        body = _openai_error(response, 401)
        assert body == {
            "message": "unknown API key",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
        assert response.headers["x-request-id"]
        _openai_error(await http.get("/v1/whoami"), 401)

        # Service keys: only what the app's scopes grant, on either transport.
        inference = dict(testing.service_metadata("inference", "globex"))
        training = dict(testing.service_metadata("training", "globex"))
        response = await http.get("/v1/whoami", headers=inference)
        assert response.json()["who"] == "service:inference:globex"
        error = await _grpc_error(srv.channel, "WhoAmI", metadata=tuple(training.items()))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        body = _openai_error(await http.get("/v1/whoami", headers=training), 403)
        assert "may not call" in body["message"] and body["code"] == "permission_denied"
        _openai_error(await http.post("/v1/echo", headers=inference, json={"text": "a"}), 403)
        # A templated route is granted whatever its parameters.
        _openai_error(await http.get("/v1/things/anything", headers=inference), 404)
        _openai_error(await http.get("/v1/things/anything", headers=training), 403)


async def test_http_errors_are_openai_shaped_and_counted():
    app = TwoDoorApp(TwoDoorSettings())
    async with (
        testing.running_server(app.settings, app) as srv,
        httpx.AsyncClient(base_url=srv.http_url("http_port"), timeout=5) as http,
    ):
        assert (
            await http.post("/v1/echo", headers=ACME, json={"text": "ab", "times": 2})
        ).json() == {"text": "abab"}
        body = _openai_error(await http.get("/v1/things/x", headers=ACME), 404)
        assert body["message"] == "thing 'x' not found" and body["code"] == "not_found"

        body = _openai_error(await http.get("/v1/crash", headers=ACME), 500)
        assert body["message"] == GENERIC_INTERNAL_MESSAGE and body["type"] == "server_error"

        bad_json = await http.post(
            "/v1/echo",
            headers={**ACME, "content-type": "application/json"},
            content=b'{"text": "a',
        )
        assert _openai_error(bad_json, 400)["message"] == "the request body is not valid JSON"
        not_utf8 = await http.post(
            "/v1/echo",
            headers={**ACME, "content-type": "application/json"},
            content=b'{"text": "\xff"}',
        )
        assert "not UTF-8" in _openai_error(not_utf8, 400)["message"]
        wrong = await http.post("/v1/echo", headers=ACME, json={"text": "a", "times": "x"})
        body = _openai_error(wrong, 400)
        assert body["param"] == "times" and body["type"] == "invalid_request_error"

        huge = await http.post("/v1/echo", headers=ACME, json={"text": "a" * 2000})
        assert "larger than 1024 bytes" in _openai_error(huge, 413)["message"]

        async def chunked():  # no content-length: the limit counts what arrives
            yield b'{"text": "'
            yield b"a" * 2000
            yield b'"}'

        streamed = await http.post(
            "/v1/echo", headers={**ACME, "content-type": "application/json"}, content=chunked()
        )
        assert "larger than 1024 bytes" in _openai_error(streamed, 413)["message"]
        _openai_error(await http.get("/v1/nowhere", headers=ACME), 404)

    def count(route: str, code: str) -> float:
        value = REGISTRY.get_sample_value("loraplex_rpc_total", {"method": route, "code": code})
        return value or 0.0

    # The same metrics as gRPC, labelled by route template, never by the raw path.
    assert count("GET /v1/things/{name}", "NOT_FOUND") >= 1
    assert count("GET /v1/crash", "INTERNAL") >= 1
    assert count("POST /v1/echo", "OK") >= 1
    assert count("POST /v1/echo", "INVALID_ARGUMENT") >= 2
    assert count("GET /v1/things/x", "NOT_FOUND") == 0
    assert count("GET (no route)", "NOT_FOUND") >= 1  # /v1/nowhere: no series of its own


async def test_undecodable_grpc_request_is_invalid_argument_naming_the_type():
    app = TwoDoorApp(TwoDoorSettings())
    async with testing.running_server(app.settings, app) as srv:
        ok = await _grpc(srv.channel, "Typed", b"", testing.tenant_metadata("acme"))
        assert health_pb2.HealthCheckResponse.FromString(ok).status == 1
        for garbage in (b"\x0a\x02\xff\xfe", b"\x0a\x05ab"):  # bad UTF-8; truncated
            error = await _grpc_error(
                srv.channel, "Typed", garbage, testing.tenant_metadata("acme")
            )
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "grpc.health.v1.HealthCheckRequest" in error.details()
        # Authentication still comes first.
        error = await _grpc_error(srv.channel, "Typed", b"\x0a\x02\xff\xfe")
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_both_front_ends_refuse_while_starting_then_admit():
    release = asyncio.Event()
    app = TwoDoorApp(TwoDoorSettings(), release)
    async with testing.starting_server(app.settings, app) as (server, starting):
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        url = f"http://127.0.0.1:{testing.http_port(server, 'http_port')}"
        async with channel, httpx.AsyncClient(base_url=url, timeout=5) as http:
            error = await _grpc_error(channel, "WhoAmI", metadata=testing.tenant_metadata("acme"))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert error.details() == "two doors are opening; retry shortly"
            body = _openai_error(await http.get("/v1/whoami", headers=ACME), 503)
            assert body["message"] == "two doors are opening; retry shortly"
            # An unknown key is refused as such even before the service is ready.
            _openai_error(await http.get("/v1/whoami", headers={"authorization": "Bearer x"}), 401)
            release.set()
            await starting
            assert (await http.get("/v1/whoami", headers=ACME)).status_code == 200
            assert await _grpc(channel, "WhoAmI", metadata=testing.tenant_metadata("acme"))


async def test_stop_drains_both_front_ends_then_closes_the_app():
    app = TwoDoorApp(TwoDoorSettings())
    async with testing.running_server(app.settings, app) as srv:
        url = srv.http_url("http_port")
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:

            async def stream() -> str:
                async with http.stream("GET", "/v1/slow", headers=ACME) as response:
                    return "".join([chunk async for chunk in response.aiter_text()])

            streaming = asyncio.create_task(stream())
            unary = asyncio.create_task(
                _grpc(srv.channel, "Slow", metadata=testing.tenant_metadata("acme"))
            )
            await app.in_flight.wait()
            await app.http_in_flight.wait()
            await srv.server.stop(grace=5)
            # Both in-flight requests finished; then the app closed.
            assert await streaming == "0\n1\n2\n"
            assert await unary == b"done"
            assert app.closed
            with pytest.raises(httpx.TransportError):
                await http.get("/v1/whoami", headers=ACME)
