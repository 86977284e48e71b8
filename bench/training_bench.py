"""Training throughput and peak memory: the service's trainer vs transformers `Trainer` + peft.

Same tiny Llama (built on the spot, nothing downloaded), same LoRA, same rows, batch
size, steps, learning rate and schedule. Rows have very different lengths, which is
where padding wastes compute; the service packs a micro-batch into one row instead.
Each side runs in its own process so peak RSS is its own.

    .venv/bin/python bench/training_bench.py --steps 30
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ["apple", "banana", "cherry", "grape", "red", "blue", "green", "the", "is", "and"]


def make_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        context = " ".join(rng.choice(WORDS) for _ in range(rng.choice([4, 8, 16, 32, 64, 100])))
        rows.append({"prompt": f"{context} what color is the apple ?", "completion": "red"})
    return rows


def _spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from services.training.spec import DatasetInput, JobSpec, with_defaults

    spec = with_defaults(JobSpec(base_model="bench", train=[DatasetInput("d")]))
    hp = spec.hyperparameters
    hp.max_steps, hp.batch_size, hp.learning_rate = args.steps, args.batch_size, 1e-3
    hp.max_seq_length, hp.warmup_ratio, hp.scheduler = 256, 0.1, "cosine"
    spec.lora.dropout = 0.0
    return spec


def run_service(base: str, args: argparse.Namespace) -> dict[str, float]:
    return time_trainer(_spec(args), base, make_rows(args.rows, 0), args.steps, args.threads)


def time_trainer(spec, base: str, rows: list, steps: int, threads: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The service's own trainer on `rows` for `steps` steps: tokens, seconds, trainable
    parameters and peak RSS (loading, encoding and the optimizer are not timed)."""
    import torch

    from services.training import methods
    from services.training.batching import real_tokens
    from services.training.trainer import LoopState, Splits, Trainer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as job_dir:
        trainer = Trainer(spec, Path(base), Path(job_dir), lambda kind, **payload: None)
        trainer._load()
        trainer._encode(Splits(rows))
        trainer._plan()
        trainer.checkpoint_interval = 10**9
        trainer.model = methods.prepare_model(trainer.model, spec)
        trainer._optimizer()
        trainable, _ = methods.count_parameters(trainer.model)
        batches = trainer._micro_batches(0)
        tokens = sum(real_tokens(next(batches)) for _ in range(steps))
        started = time.perf_counter()
        trainer._train(LoopState())
        elapsed = time.perf_counter() - started
    return {
        "tokens": tokens,
        "seconds": elapsed,
        "trainable": trainable,
        "peak_rss_mb": _peak_mb(),
    }


def run_baseline(base: str, args: argparse.Namespace) -> dict[str, float]:
    import peft
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from services.training.batching import encode

    torch.set_num_threads(args.threads)
    spec = _spec(args)
    hp = spec.hyperparameters
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = peft.get_peft_model(model, methods_config(spec, model))
    examples = encode(tokenizer, make_rows(args.rows, 0), "instruction", hp.max_seq_length)
    dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=hp.batch_size,
            max_steps=hp.max_steps,
            learning_rate=hp.learning_rate,
            lr_scheduler_type=hp.scheduler,
            warmup_steps=int(hp.warmup_ratio * hp.max_steps),
            weight_decay=hp.weight_decay,
            max_grad_norm=1.0,
            logging_steps=10**6,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            dataloader_num_workers=0,
            seed=hp.seed,
            disable_tqdm=True,
        )
        collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
        trainer = Trainer(
            model=model, args=training_args, train_dataset=dataset, data_collator=collator
        )
        started = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - started
    mean_len = sum(len(e.input_ids) for e in examples) / len(examples)
    tokens = mean_len * hp.batch_size * hp.max_steps
    return {"tokens": tokens, "seconds": elapsed, "peak_rss_mb": _peak_mb()}


def methods_config(spec, model):  # type: ignore[no-untyped-def]
    from services.training.methods import peft_config

    return peft_config(spec, model)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(name: str, base: str, args: argparse.Namespace) -> dict[str, float]:
    return {"service": run_service, "baseline": run_baseline}[name](base, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from tests.unit.training.tiny_model import build_tiny_model

    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        base = str(build_tiny_model(Path(tmp) / "bench", hidden=args.hidden, layers=args.layers))
        results = {}
        for name in ("baseline", "service"):
            with context.Pool(1) as pool:
                results[name] = pool.apply(_child, (name, base, args))
    print(
        f"\nLoRA r8, Llama hidden {args.hidden} x {args.layers} layers, batch {args.batch_size},"
        f" {args.steps} steps, CPU threads {args.threads}"
    )
    print(f"{'trainer':<34}{'tokens/s':>12}{'seconds':>10}{'peak RSS MB':>14}")
    for name, label in (
        ("baseline", "transformers Trainer + peft (pad)"),
        ("service", "loraplex trainer (packed)"),
    ):
        r = results[name]
        print(
            f"{label:<34}{r['tokens'] / r['seconds']:>12.0f}{r['seconds']:>10.2f}"
            f"{r['peak_rss_mb']:>14.0f}"
        )
    ratio = (results["service"]["tokens"] / results["service"]["seconds"]) / (
        results["baseline"]["tokens"] / results["baseline"]["seconds"]
    )
    print(f"throughput ratio service/baseline: {ratio:.2f}")


if __name__ == "__main__":
    main()
