"""Training step time with LoRA on every layer vs only the last N (`lora.last_layers`).

Same base, rows, rank, targets, batch and steps; only `last_layers` changes, each in its
own process. Backpropagation stops at the first adapted layer, so the saving grows with
the share of layers left out. Default base: a random Llama as deep as SmolLM2-135M (30
layers, built on the spot); `--model PATH` runs a real model folder instead, such as the
one `make demo` imports to .loraplex/demo/models/smollm2-135m-instruct.

    .venv/bin/python bench/lora_layers_bench.py [--last 10 6] [--model PATH]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.training_bench import make_rows, time_trainer

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run(base: str, last_layers: int, args: argparse.Namespace) -> dict[str, float]:
    from services.training.spec import DatasetInput, JobSpec, with_defaults

    spec = with_defaults(JobSpec(base_model="bench", train=[DatasetInput("d")]))
    hp = spec.hyperparameters
    hp.max_steps, hp.batch_size, hp.max_seq_length = args.steps, args.batch_size, 640
    spec.lora.rank, spec.lora.alpha, spec.lora.target_modules = 16, 32.0, TARGETS
    spec.lora.last_layers = last_layers
    return time_trainer(spec, base, make_rows(args.rows, 0), args.steps, args.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="a model folder (default: random Llama)")
    parser.add_argument("--last", type=int, nargs="+", default=[10, 6])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from tests.unit.training.tiny_model import build_tiny_model

    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        base = args.model or str(build_tiny_model(Path(tmp) / "b", hidden=256, layers=30))
        results = {}
        for last in (0, *args.last):
            with context.Pool(1) as pool:
                results[last] = pool.apply(run, (base, last, args))
    name = args.model or "random Llama hidden 256 x 30 layers"
    print(
        f"\nLoRA r16 on q/k/v/o/gate/up/down, {name}, batch {args.batch_size},"
        f" {args.steps} steps, CPU threads {args.threads}"
    )
    print(f"{'adapted layers':<18}{'trainable':>12}{'s/step':>9}{'tokens/s':>10}{'speed-up':>10}")
    per_step = {k: r["seconds"] / args.steps for k, r in results.items()}
    for last, r in results.items():
        label = "all" if last == 0 else f"last {last}"
        print(
            f"{label:<18}{r['trainable']:>12,.0f}{per_step[last]:>9.2f}"
            f"{r['tokens'] / r['seconds']:>10.0f}{per_step[0] / per_step[last]:>9.2f}x"
        )


if __name__ == "__main__":
    main()
