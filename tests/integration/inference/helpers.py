"""Small helpers for driving the suite's stubs as tenants."""

from __future__ import annotations

import hashlib
from pathlib import Path

from loraplex.inference.v1 import inference_service_pb2 as pb
from loraplex.registry.v1 import registry_service_pb2 as reg_pb
from services.common.testing import tenant_metadata


async def push_adapter(suite, tenant: str, name: str, folder: Path, aliases=()) -> int:
    files = sorted(p for p in folder.iterdir() if p.is_file())

    async def requests():
        yield reg_pb.PushAdapterRequest(
            header=reg_pb.PushHeader(
                name=name,
                aliases=list(aliases),
                files=[
                    reg_pb.FileManifest(
                        path=p.name,
                        size_bytes=p.stat().st_size,
                        sha256=hashlib.sha256(p.read_bytes()).hexdigest(),
                    )
                    for p in files
                ],
            )
        )
        for p in files:
            yield reg_pb.PushAdapterRequest(
                chunk=reg_pb.FileChunk(path=p.name, data=p.read_bytes())
            )

    reply = await suite.registry_stub.PushAdapter(requests(), metadata=tenant_metadata(tenant))
    return reply.version.version


def request(prompt: str = "hello world", adapter: str = "", max_tokens: int = 12, **rag):
    spec = pb.GenerationInput(
        adapter=adapter,
        prompt=prompt,
        sampling=pb.SamplingParams(max_tokens=max_tokens, temperature=0),
        use_chat_template=False,
    )
    if rag:
        spec.rag.CopyFrom(pb.RagOptions(**rag))
    return pb.GenerateTextRequest(input=spec)


async def generate(suite, tenant: str, **kwargs) -> pb.GenerationResult:
    reply = await suite.stub.GenerateText(
        request(**kwargs), metadata=tenant_metadata(tenant), timeout=120
    )
    return reply.result
