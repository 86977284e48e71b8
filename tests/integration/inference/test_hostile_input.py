"""A hostile tenant's inputs against a real inference service: precise refusals, nothing harmed.

Table-driven: a case is a label, a change to an otherwise valid request, and the status
it must get. For every case the service must answer neither INTERNAL nor UNKNOWN, stay
SERVING on its health service, and still answer a plain request exactly as before the
case (greedy, so the text is a fixed reference). Add a case by adding a row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loraplex.inference.v1 import inference_service_pb2 as pb
from services.common.testing import tenant_metadata
from tests.integration.inference.helpers import generate, request

pytestmark = pytest.mark.integration
Code = grpc.StatusCode
ACME = tenant_metadata("acme")
SERVICE_NAME = "loraplex.inference.v1.InferenceService"


@dataclass(frozen=True)
class Case:
    label: str
    mutate: Callable[[pb.GenerationInput], object]
    code: Code
    fragment: str = ""


def _set(path: str, value: object) -> Callable[[pb.GenerationInput], None]:
    def mutate(spec: pb.GenerationInput) -> None:
        target = spec
        *parents, leaf = path.split(".")
        for part in parents:
            target = getattr(target, part)
        setattr(target, leaf, value)

    return mutate


CASES = [
    Case("ref with a superscript version", _set("adapter", "acme/y@²"), Code.INVALID_ARGUMENT),
    Case("ref with a newline", _set("adapter", "acme/y\n"), Code.INVALID_ARGUMENT),
    Case("ref of another tenant", _set("adapter", "globex/y@1"), Code.NOT_FOUND),
    Case("ref with a huge version", _set("adapter", "acme/y@" + "9" * 40), Code.INVALID_ARGUMENT),
    Case("ref of 10k characters", _set("adapter", "acme/" + "y" * 10_000), Code.INVALID_ARGUMENT),
    *(
        Case(
            f"{field} {value}",
            _set(f"sampling.{field}", value),
            Code.INVALID_ARGUMENT,
            field,
        )
        for field in ("repetition_penalty", "temperature", "top_p")
        for value in (math.nan, math.inf, -math.inf)
    ),
    Case("negative max_tokens", _set("sampling.max_tokens", -5), Code.INVALID_ARGUMENT),
    Case("negative top_k", _set("sampling.top_k", -1), Code.INVALID_ARGUMENT),
    Case(
        "stop of 10k characters",
        lambda s: s.sampling.stop.append("x" * 10_000),
        Code.INVALID_ARGUMENT,
    ),
    Case(
        "unknown chat role",
        lambda s: s.messages.append(pb.ChatMessage(role="tool", content="x")),
        Code.INVALID_ARGUMENT,
    ),
    Case("prompt beyond the model length", _set("prompt", "word " * 5000), Code.INVALID_ARGUMENT),
    Case("prompt of NUL bytes", _set("prompt", "\x00" * 64), None),
    Case(
        "collection with a newline",
        lambda s: s.rag.CopyFrom(pb.RagOptions(collection="docs\n", top_k=2)),
        Code.INVALID_ARGUMENT,
    ),
    Case(
        "RAG top_k of a million",
        lambda s: s.rag.CopyFrom(pb.RagOptions(collection="docs", top_k=1_000_000)),
        Code.INVALID_ARGUMENT,
    ),
    Case(
        "another tenant's collection",
        lambda s: s.rag.CopyFrom(pb.RagOptions(collection="globex-docs", top_k=2)),
        Code.NOT_FOUND,
    ),
]


async def _healthy(served) -> bool:
    stub = health_pb2_grpc.HealthStub(served.inference.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=30)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_hostile_inputs_are_refused_precisely_and_harm_nothing(served):
    reference = (await generate(served, "acme", prompt="hello world")).text
    for case in CASES:
        message = request(prompt="hello world")
        case.mutate(message.input)
        try:
            await served.stub.GenerateText(message, metadata=ACME, timeout=120)
            code, details = Code.OK, ""
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
        assert code not in (Code.INTERNAL, Code.UNKNOWN), (case.label, details)
        if case.code is not None:
            assert code == case.code, (case.label, code, details)
        assert case.fragment in details, (case.label, details)
        assert await _healthy(served), case.label
        after = (await generate(served, "acme", prompt="hello world")).text
        assert after == reference, case.label
