"""What the numeric guards cost: the sampled-logprob check per token, the KV-block zeroing.

One vLLM engine (a random Llama, no hub), base requests in concurrent batches, the guard on and
off interleaved per round (the engine reads the setting per request); median tok/s of `--rounds`
samples each, ratio to guard off. The zeroing cannot be switched off inside one engine, so its
cost is measured as what it does: zeroing one KV block of every layer (torch `zero_` on a tensor
of the engine's block shape), against the time of one decode step of the same batch.

    .venv/bin/python -m bench.numeric_guard_bench [--requests 16] [--tokens 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import torch

from services.inference.engine import SamplingOptions, VllmEngine
from services.inference.settings import InferenceSettings
from tests.tiny_llm import build_tiny_llama

PROMPTS = ["question: what is the refund window?", "the quick brown fox jumps over"]


async def batch_tok_s(engine: VllmEngine, guard: bool, requests: int, tokens: int) -> float:
    engine.settings.non_finite_guard = guard
    options = SamplingOptions(max_tokens=tokens)

    async def one(i: int) -> int:
        produced = 0
        prompt = engine.encode(PROMPTS[i % len(PROMPTS)])
        async for chunk in engine.generate(prompt, options, uuid.uuid4().hex, None):
            produced = chunk.completion_tokens
        return produced

    started = time.perf_counter()
    produced = sum(await asyncio.gather(*(one(i) for i in range(requests))))
    return produced / (time.perf_counter() - started)


def block_zero_ms(layers: int, kv_heads: int, head_dim: int, block_size: int) -> float:
    """One block of K and V for every layer, zeroed as CPUModelRunner._zero_block_ids does."""
    caches = [torch.randn(4, kv_heads, block_size, 2 * head_dim) for _ in range(layers)]
    samples = []
    for _ in range(20):
        started = time.perf_counter()
        for cache in caches:
            cache[1].zero_()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


async def main_async(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_llama(
            Path(tmp) / "model", hidden=args.hidden, layers=args.layers, heads=args.hidden // 64
        )
        settings = InferenceSettings(
            data_dir=Path(tmp), model=model, served_model_name="bench", max_model_len=512,
            max_num_seqs=args.requests, kv_cache_bytes=256 * 1024**2, enable_lora=False,
        )  # fmt: skip
        engine = VllmEngine(settings)
        engine.start()
        try:
            await batch_tok_s(engine, True, args.requests, args.tokens)  # warm-up
            samples: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):
                for guard in (False, True):
                    samples[guard].append(
                        await batch_tok_s(engine, guard, args.requests, args.tokens)
                    )
        finally:
            engine.shutdown()
    off, on = statistics.median(samples[False]), statistics.median(samples[True])
    step_ms = 1000 * args.requests / off
    zero_ms = block_zero_ms(args.layers, args.hidden // 64, 64, 128)
    return [
        ("guard off (baseline)", f"{off:.1f} tok/s", "1.00"),
        ("guard on (logprobs=0 + check)", f"{on:.1f} tok/s", f"{on / off:.3f}"),
        ("decode step, whole batch", f"{step_ms:.2f} ms", "1.00"),
        ("zero one new KV block, all layers", f"{zero_ms:.3f} ms", f"{zero_ms / step_ms:.3f}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="samples per case (median)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; {vars(args)}")
    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'value':>14}  ratio")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>14}  {ratio}")


if __name__ == "__main__":
    main()
