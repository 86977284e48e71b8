"""Inference at scale, for bench/inference_bench.py: routing over replicas, 1,000 adapters.

- `routing`: 2 inference replicas as real processes (`python -m services.inference`, each
  its own vLLM engine), driven through the SDK. The share of requests each replica took
  and the share of adapter requests that found their adapter already loaded there, read
  from each replica's own metrics port (`loraplex_rpc_total`,
  `loraplex_inference_adapter_cache_total`): gRPC's plain `round_robin`, then the SDK's
  adapter-affine channel by hashing alone, then with `adapters_per_replica` = the
  replicas' 4 slots, in the same run.
- `cycling`: every request names a different adapter of 1,000 pushed to the registry,
  against the 8-adapter mix on the same engine and driver: errors, tokens/s, p99 time
  to first token, and the RSS of the serving processes over the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.inference_bench import ACME, MODEL_NAME, PROMPTS, spec
from loraplex.client.base import ClientConfig
from loraplex.client.inference import InferenceClient
from loraplex.inference.v1 import inference_service_pb2 as pb
from services.common.probes import free_port, wait_until_serving
from services.common.testing import TEST_SERVICE_KEYS, TEST_TENANT_KEYS

INFERENCE_SERVICE = "loraplex.inference.v1.InferenceService"
Row = tuple[str, str, str]


# -- adapters -----------------------------------------------------------------------------


def lora_variants(template: Path, root: Path, count: int, seed: int = 7) -> list[Path]:
    """`count` adapters shaped like `template` with fresh random weights (peft runs once)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(template / "adapter_model.safetensors")
    generator = torch.Generator().manual_seed(seed)
    folders = []
    for i in range(count):
        folder = root / f"variant{i}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(template / "adapter_config.json", folder / "adapter_config.json")
        fresh = {
            key: torch.randn(value.shape, generator=generator) * float(value.std() or 0.05)
            for key, value in tensors.items()
        }
        save_file(fresh, folder / "adapter_model.safetensors")
        folders.append(folder)
    return folders


# -- a streamed load ----------------------------------------------------------------------


@dataclass
class Load:
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    seconds: float = 0.0
    ttft_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def p99_ttft(self) -> float:
        ordered = sorted(self.ttft_ms)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else float("nan")


async def stream_load(
    stub, adapter_of: Callable[[int], str], total: int, concurrency: int, tokens: int
) -> Load:
    """`total` streamed requests, `concurrency` at a time; request i names `adapter_of(i)`."""
    load = Load(requests=total)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            message = pb.StreamGenerateTextRequest(
                input=spec(PROMPTS[i % len(PROMPTS)], adapter_of(i), tokens)
            )
            start = time.perf_counter()
            first = None
            try:
                async for item in stub.StreamGenerateText(message, metadata=ACME, timeout=600):
                    if first is None and item.HasField("delta"):
                        first = time.perf_counter()
                    if item.HasField("result"):
                        load.tokens += item.result.usage.completion_tokens
            except grpc.aio.AioRpcError:
                load.errors += 1
                return
            load.ttft_ms.append(((first or time.perf_counter()) - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    load.seconds = time.perf_counter() - start
    return load


class RssSampler:
    """Resident memory of this process and its children (vLLM's engine core), sampled."""

    def __init__(self, every: float = 0.5) -> None:
        import psutil

        self.process = psutil.Process()
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now_mib(self) -> float:
        total = 0
        for proc in [self.process, *self.process.children(recursive=True)]:
            with contextlib.suppress(Exception):
                total += proc.memory_info().rss
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(self.now_mib())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def cycling(suite, work: Path, model: Path, args, push) -> list[Row]:
    """1,000 distinct adapters, each request naming the next, against the 8-adapter mix."""
    from tests.tiny_llm import make_random_lora

    count = args.cycle_adapters
    template = make_random_lora(
        work / "cycle-template", model, seed=900, scale=0.05, base_model_name=MODEL_NAME
    )
    folders = await asyncio.to_thread(lora_variants, template, work / "cycle", count)
    started = time.perf_counter()
    for i, folder in enumerate(folders):
        await push(suite, "acme", f"acme/c{i}", folder)
    pushed_s = time.perf_counter() - started
    concurrency, tokens = args.requests, args.tokens
    mix = await stream_load(
        suite.stub, lambda i: f"acme/a{i % 8}", 8 * concurrency, concurrency, tokens
    )
    rss_start = RssSampler().now_mib()
    marks = []
    with RssSampler() as sampler:
        total = Load()
        for _ in range(args.cycles):
            load = await stream_load(
                suite.stub, lambda i: f"acme/c{i % count}", count, concurrency, tokens
            )
            marks.append(sampler.now_mib())
            total.requests += load.requests
            total.errors += load.errors
            total.tokens += load.tokens
            total.seconds += load.seconds
            total.ttft_ms += load.ttft_ms
    peak = max(sampler.samples or marks)
    growth = marks[-1] - marks[0]
    return [
        (f"{count} adapters pushed (s)", f"{pushed_s:.0f}", f"{count / pushed_s:.0f} per s"),
        ("8-adapter mix, streamed: tok/s", f"{mix.rate:.1f}", f"p99 TTFT {mix.p99_ttft:.0f} ms"),
        (
            f"{count} adapters cycling x{args.cycles}: tok/s",
            f"{total.rate:.1f}",
            f"{total.rate / mix.rate:.2f}x the 8-mix (goal >= 0.5x)",
        ),
        (
            "  errors / requests",
            f"{total.errors} / {total.requests}",
            "goal 0" + (f"; 8-mix errors {mix.errors}" if mix.errors else ""),
        ),
        ("  p99 time to first token ms", f"{total.p99_ttft:.0f}", f"8-mix {mix.p99_ttft:.0f}"),
        (
            "  RSS MiB: start / after cycle 1 / end",
            f"{rss_start:.0f} / {marks[0]:.0f} / {marks[-1]:.0f}",
            f"after cycle 1 {growth:+.0f} MiB, peak {peak:.0f}"
            + (" (goal: flat)" if args.cycles > 1 else " (one cycle: run --cycles 2+)"),
        ),
    ]


# -- routing over two replica processes ---------------------------------------------------


@dataclass
class Replica:
    process: subprocess.Popen
    port: int
    metrics_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def counts(self) -> tuple[float, float, float, int]:
        """(GenerateText OK, adapter hits, adapter misses, adapters loaded) from /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        calls = hits = misses = loaded = 0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "loraplex_rpc_total" and s.labels["code"] == "OK":
                    calls += s.value if s.labels["method"].endswith("GenerateText") else 0
                elif s.name == "loraplex_inference_adapter_cache_total":
                    hits += s.value if s.labels["result"] == "hit" else 0
                    misses += s.value if s.labels["result"] == "miss" else 0
                elif s.name == "vllm:lora_adapter_loaded":
                    loaded += 1
        return calls, hits, misses, loaded


@contextlib.contextmanager
def replica_processes(work: Path, model: Path, registry: str, count: int) -> Iterator[list]:
    replicas = []
    try:
        for i in range(count):
            port, metrics_port = free_port(), free_port()
            env = {
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "LORAPLEX_LOG_LEVEL": "WARNING",
                "LORAPLEX_DATA_DIR": str(work / f"replica{i}"),
                "LORAPLEX_API_KEYS": f"acme:{TEST_TENANT_KEYS['acme']}",
                "LORAPLEX_INFERENCE_PORT": str(port),
                "LORAPLEX_INFERENCE_METRICS_PORT": str(metrics_port),
                "LORAPLEX_INFERENCE_MODEL": str(model),
                "LORAPLEX_INFERENCE_SERVED_MODEL_NAME": MODEL_NAME,
                "LORAPLEX_INFERENCE_MAX_LORAS": "4",
                "LORAPLEX_INFERENCE_MAX_CPU_LORAS": "4",
                "LORAPLEX_INFERENCE_MAX_LORA_RANK": "8",
                "LORAPLEX_INFERENCE_MAX_MODEL_LEN": "512",
                "LORAPLEX_INFERENCE_MAX_NUM_SEQS": "16",
                "LORAPLEX_INFERENCE_KV_CACHE_BYTES": str(128 * 2**20),
                "LORAPLEX_INFERENCE_SERVICE_KEY": TEST_SERVICE_KEYS["inference"],
                "LORAPLEX_INFERENCE_REGISTRY_ADDR": registry,
                "LORAPLEX_INFERENCE_ENGINE_ARGS": json.dumps({}),
            }
            process = subprocess.Popen([sys.executable, "-m", "services.inference"], env=env)
            replicas.append(Replica(process, port, metrics_port))
        for replica in replicas:
            wait_until_serving(replica.target, INFERENCE_SERVICE, 900, replica.process)
        yield replicas
    finally:
        for replica in replicas:
            replica.process.terminate()
        for replica in replicas:
            try:
                replica.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                replica.process.kill()


def drive(client: InferenceClient, adapters: list[str], total: int, threads: int, tokens: int):
    """`total` requests from `threads` threads, adapters drawn at random (seeded; a cyclic
    order would line up with round robin's); every sixth names no adapter."""
    draw = random.Random(len(adapters))
    names = ["" if i % 6 == 5 else draw.choice(adapters) for i in range(total)]

    def one(i: int) -> None:
        client.generate(PROMPTS[i % len(PROMPTS)], adapter=names[i], max_tokens=tokens)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(total)))


def routing_phase(replicas: list[Replica], client, adapters, args) -> tuple[list[float], float]:
    """(share of requests per replica, share of adapter requests that found it loaded)."""
    before = [r.counts() for r in replicas]
    drive(client, adapters, args.routing_requests, args.routing_threads, args.tokens)
    after = [r.counts() for r in replicas]
    calls = [a[0] - b[0] for a, b in zip(after, before, strict=True)]
    hits = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    misses = sum(a[2] - b[2] for a, b in zip(after, before, strict=True))
    return [c / sum(calls) for c in calls], hits / max(1, hits + misses)


async def routing(suite, work: Path, model: Path, args, push) -> list[Row]:
    """2 replica processes, 8 adapters (= 2 x max_loras 4): round robin, then affinity."""
    from tests.tiny_llm import make_random_lora

    template = make_random_lora(
        work / "route-template", model, seed=700, scale=0.05, base_model_name=MODEL_NAME
    )
    folders = await asyncio.to_thread(lora_variants, template, work / "route", 8, 70)
    adapters = [f"acme/r{i}" for i in range(8)]
    for name, folder in zip(adapters, folders, strict=True):
        await push(suite, "acme", name, folder)

    def run() -> list[Row]:
        with replica_processes(work, model, suite.registry.target, 2) as replicas:
            address = ",".join(r.target for r in replicas)
            config = ClientConfig(address=address, api_key=TEST_TENANT_KEYS["acme"], timeout=300)
            with InferenceClient(config=config) as client:
                drive(client, [""], 8, 2, 4)  # warm-up: each engine's compile paths
                plain = InferenceClient(config=config)
                plain.channel.close()
                plain.channel = config.open_channel("")  # gRPC round_robin, no affinity
                rr_share, rr_hit = routing_phase(replicas, plain, adapters, args)
                plain.close()
                aff_share, aff_hit = routing_phase(replicas, client, adapters, args)
            slots = ClientConfig(
                address=address, api_key=TEST_TENANT_KEYS["acme"], timeout=300,
                adapters_per_replica=4,
            )  # fmt: skip
            with InferenceClient(config=slots) as client:
                slot_share, slot_hit = routing_phase(replicas, client, adapters, args)
            loaded = [r.counts()[3] for r in replicas]
        shares = lambda s: " / ".join(f"{x:.0%}" for x in s)  # noqa: E731
        return [
            (
                "routing: 2 replicas, 8 adapters, max_loras 4",
                "",
                f"{args.routing_requests} req, {args.routing_threads} threads, 1 in 6 base",
            ),
            ("  round robin: share per replica", shares(rr_share), f"holding {rr_hit:.0%}"),
            ("  SDK affinity, hashing alone", shares(aff_share), f"holding {aff_hit:.0%}"),
            (
                "  SDK affinity, 4 adapters per replica",
                shares(slot_share),
                f"holding {slot_hit:.0%} (goals 40-60% each, >= 90% holding)",
            ),
            ("  vllm:lora_adapter_loaded per replica", " / ".join(map(str, loaded)), ""),
        ]

    return await asyncio.to_thread(run)
