"""What the OpenAI-compatible HTTP surface adds over direct gRPC: 32 concurrent streams.

One vLLM engine, one inference app with both front ends on loopback (real registry and
retrieval beside it, as in service). Each round sends the same `--streams` prompts at once
(greedy, `--tokens` each, no chat template on either side, so both generate the same
tokens) through:

- gRPC `StreamGenerateText` (the baseline, the SDK's path);
- HTTP `POST /v1/completions` with `stream: true`, read as raw SSE with httpx;
- the same through the official `openai` client (its per-chunk parsing included);
- the same through the gateway's forwarding (the one local address of `suite up`).

Cases interleave, `--rounds` rounds, medians. Per case: generated tokens per second over
the round's wall time, its ratio to gRPC, time to first token p50 (first content chunk as
the client sees it) and the milliseconds it adds to gRPC's p50.

    /work/heavy .venv/bin/python -m bench.openai_http_bench [--streams 32] [--tokens 64]

`--engine ticking` replaces vLLM with a model-free engine that gives every stream one
token per `--step-ms` tick, all at once like one engine step: what the front ends and
clients cost then stands out from the engine's own step-to-step noise (on a shared
2-core machine a request that misses a prefill step waits a whole step).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from loraplex.inference.v1 import inference_service_pb2 as pb
from services.common.testing import (
    TEST_SERVICE_KEYS,
    TEST_TENANT_KEYS,
    running_server,
    tenant_metadata,
)
from services.inference.app import InferenceApp
from services.inference.engine import AdapterHandle, EngineChunk, SamplingOptions, VllmEngine
from services.inference.settings import InferenceSettings
from tests.tiny_llm import build_tiny_llama
from tests.unit.inference.fake_engine import FakeEngine

MODEL_NAME = "tiny"
ACME = tenant_metadata("acme")
PROMPTS = [
    "question: what is the refund window?",
    "question: who approves travel?",
    "the quick brown fox jumps over",
    "hello world, this is loraplex",
]
#: One stream's (time to first token in seconds, tokens generated).
Stream = Callable[[int], Awaitable[tuple[float, int]]]


def grpc_stream(stub, tokens: int) -> Stream:
    async def one(i: int) -> tuple[float, int]:
        spec = pb.GenerationInput(
            prompt=PROMPTS[i % len(PROMPTS)],
            use_chat_template=False,
            sampling=pb.SamplingParams(max_tokens=tokens, temperature=0),
        )
        start = time.perf_counter()
        first, produced = 0.0, 0
        async for message in stub.StreamGenerateText(
            pb.StreamGenerateTextRequest(input=spec), metadata=ACME
        ):
            if message.HasField("result"):
                produced = message.result.usage.completion_tokens
            elif not first:
                first = time.perf_counter() - start
        return first, produced

    return one


def body(i: int, tokens: int) -> dict:
    return {
        "model": MODEL_NAME,
        "prompt": PROMPTS[i % len(PROMPTS)],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def httpx_stream(http, tokens: int) -> Stream:
    async def one(i: int) -> tuple[float, int]:
        start = time.perf_counter()
        first, produced = 0.0, 0
        async with http.stream("POST", "/completions", json=body(i, tokens)) as reply:
            async for line in reply.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    produced = chunk["usage"]["completion_tokens"]
                elif not first and chunk["choices"] and chunk["choices"][0]["text"]:
                    first = time.perf_counter() - start
        return first, produced

    return one


def openai_stream(client, tokens: int) -> Stream:
    async def one(i: int) -> tuple[float, int]:
        start = time.perf_counter()
        first, produced = 0.0, 0
        stream = await client.completions.create(**body(i, tokens))
        async for chunk in stream:
            if chunk.usage:
                produced = chunk.usage.completion_tokens
            elif not first and chunk.choices and chunk.choices[0].text:
                first = time.perf_counter() - start
        return first, produced

    return one


class TickingEngine(FakeEngine):
    """One token per stream per tick, every waiting stream at once; prefill is a tick."""

    def __init__(self, step_ms: float) -> None:
        super().__init__(max_model_len=1024)
        self.model_name = MODEL_NAME
        self.step = step_ms / 1000
        self._tick: asyncio.Future[None] | None = None

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    async def _next_tick(self) -> None:
        if self._tick is None or self._tick.done():
            loop = asyncio.get_running_loop()
            self._tick = tick = loop.create_future()
            loop.call_later(self.step, lambda: tick.done() or tick.set_result(None))
        await self._tick

    async def generate(
        self,
        prompt_ids: list[int],
        options: SamplingOptions,
        request_id: str,
        adapter: AdapterHandle | None,
    ) -> AsyncIterator[EngineChunk]:
        await self._next_tick()
        for count in range(1, options.max_tokens + 1):
            done = count == options.max_tokens
            yield EngineChunk(f" w{count}", count, done, "length" if done else None)
            if not done:
                await self._next_tick()


async def round_of(stream: Stream, streams: int) -> tuple[float, float]:
    """(tokens per second over the round, TTFT p50 in ms)."""
    start = time.perf_counter()
    results = await asyncio.gather(*(stream(i) for i in range(streams)))
    wall = time.perf_counter() - start
    return sum(p for _, p in results) / wall, statistics.median(f for f, _ in results) * 1000


async def main_async(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    import httpx
    import openai

    work = Path(tempfile.mkdtemp(prefix="openai-http-bench-"))
    if args.engine == "ticking":
        model = work / "model"
        model.mkdir()
    else:
        model = build_tiny_llama(work / "model", hidden=args.hidden, layers=args.layers, heads=8)
    data = work / "data"
    settings = InferenceSettings(
        data_dir=data, model=model, served_model_name=MODEL_NAME, max_num_seqs=args.streams,
        max_model_len=1024, kv_cache_bytes=512 * 1024 * 1024, max_tokens_cap=512,
        per_tenant_concurrency=1024, max_pending=1024, service_key=TEST_SERVICE_KEYS["inference"],
    )  # fmt: skip
    # The engine first: its workers must not inherit what sentence-transformers leaves behind.
    engine = TickingEngine(args.step_ms) if args.engine == "ticking" else VllmEngine(settings)
    engine.start()
    from services.gateway.app import GatewayApp
    from services.gateway.settings import GatewaySettings
    from services.registry.app import RegistryApp
    from services.registry.settings import RegistrySettings
    from services.retrieval.app import RetrievalApp
    from services.retrieval.settings import RetrievalSettings
    from tests.unit.retrieval.shared import shared_embedder

    registry_settings = RegistrySettings(data_dir=data)
    retrieval_settings = RetrievalSettings(data_dir=data, executor_threads=2)
    key = {"authorization": f"Bearer {TEST_TENANT_KEYS['acme']}"}
    # Below uvicorn's 5 s keep-alive: between one case's rounds the others run.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=2.0)
    try:
        async with (
            running_server(registry_settings, RegistryApp(registry_settings)) as registry,
            running_server(
                retrieval_settings, RetrievalApp(retrieval_settings, shared_embedder())
            ) as retrieval,
        ):
            settings = settings.model_copy(
                update={"registry_addr": registry.target, "retrieval_addr": retrieval.target}
            )
            app = InferenceApp(settings, engine)
            async with running_server(settings, app) as inference:
                direct = inference.http_url("openai_port")
                gateway_settings = GatewaySettings(data_dir=data, inference_url=direct)
                async with (
                    running_server(gateway_settings, GatewayApp(gateway_settings)) as gateway,
                    httpx.AsyncClient(
                        base_url=f"{direct}/v1", headers=key, timeout=None, limits=limits
                    ) as http,
                    httpx.AsyncClient(
                        base_url=gateway.http_url("openai_port") + "/v1",
                        headers=key, timeout=None, limits=limits,
                    ) as via_gateway,
                ):  # fmt: skip
                    client = openai.AsyncOpenAI(
                        base_url=f"{direct}/v1", api_key=TEST_TENANT_KEYS["acme"],
                        max_retries=0, timeout=600,
                        http_client=httpx.AsyncClient(timeout=600, limits=limits),
                    )  # fmt: skip
                    from loraplex.inference.v1 import inference_service_pb2_grpc as grpc_pb

                    cases: dict[str, Stream] = {
                        "gRPC StreamGenerateText": grpc_stream(
                            grpc_pb.InferenceServiceStub(inference.channel), args.tokens
                        ),
                        "HTTP /v1/completions (httpx, SSE)": httpx_stream(http, args.tokens),
                        "HTTP, official openai client": openai_stream(client, args.tokens),
                        "HTTP via the gateway (one address)": httpx_stream(
                            via_gateway, args.tokens
                        ),
                    }
                    for stream in cases.values():  # warm-up: compile paths, connections
                        await round_of(stream, args.streams)
                    samples: dict[str, list[tuple[float, float]]] = {n: [] for n in cases}
                    for _ in range(args.rounds):
                        for name, stream in cases.items():
                            samples[name].append(await round_of(stream, args.streams))
                    await client.close()
    finally:
        engine.shutdown()
    return [
        (
            name,
            statistics.median(rate for rate, _ in values),
            statistics.median(ttft for _, ttft in values),
        )
        for name, values in samples.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="samples per case (median)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--engine", choices=("vllm", "ticking"), default="vllm")
    parser.add_argument("--step-ms", type=float, default=25.0, help="the ticking engine's step")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    engine = (
        f"model-free engine ticking every {args.step_ms:g} ms"
        if args.engine == "ticking"
        else f"random Llama hidden {args.hidden} x {args.layers} layers, fp32"
    )
    print(
        f"OpenAI HTTP vs gRPC — {platform.machine()}, {os.cpu_count()} cores, {engine};"
        f" {args.streams} concurrent streams x {args.tokens} tokens greedy; median of"
        f" {args.rounds} interleaved rounds"
    )
    base_rate, base_ttft = rows[0][1], rows[0][2]
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'tok/s':>8}  {'x gRPC':>6}  {'TTFT p50 ms':>11}  {'added ms':>8}")
    for name, rate, ttft in rows:
        print(
            f"{name:<{width}}  {rate:>8.1f}  {rate / base_rate:>6.3f}  {ttft:>11.1f}"
            f"  {ttft - base_ttft:>+8.1f}"
        )


if __name__ == "__main__":
    main()
