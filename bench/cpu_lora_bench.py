"""CPU multi-LoRA throughput: vLLM with and without the loraplex plugin, against peft.

    .venv/bin/python bench/cpu_lora_bench.py [--model smollm2 --rounds 2]
    .venv/bin/python bench/cpu_lora_bench.py --model tiny [--hidden 512 --layers 8 --rounds 4]

`smollm2` (default) is SmolLM2-135M-Instruct, the model the suite serves and the issue measured:
taken from the demo's model store when imported there, else converted from the packaged GGUF
into the run's temp dir (about a minute). `tiny` is a random Llama built on the spot, where
rank-8 adapters are a far larger share of the weights (hidden 512 x 8 layers: 8 adapters add
21 % to the bytes a decode step reads, against 14 % on SmolLM2 and ~2 % on a 7B model): the
stress case. 64 random rank-8 adapters on all linear layers are made for the model, then one
workload runs per row: `rounds` batches of 18 prompts, 32 new tokens each, greedy, EOS ignored.
In the mixed rows every third request is a base request and the others cycle through N distinct
adapters. Every engine config runs in its own subprocess (the plugin is chosen per process with
`LORAPLEX_CPU_LORA`), warmed up with one untimed pass; the "cache too small" row runs with
`max_cpu_loras=max_loras`, so adapters are evicted and reloaded from disk during the timed pass;
the "plugin eager" rows run the plugin with `LORAPLEX_CPU_LORA_COMPILE=0` (vLLM's eager mode).
Prints one table: tok/s and ratios against LoRA disabled and against peft's mixed batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.tiny_llm import TARGET_MODULES, build_tiny_llama, make_random_lora  # noqa: E402

DEMO_MODELS = ROOT / ".loraplex" / "demo" / "models"  # where `make demo` imports SmolLM2

PROMPTS = [
    "the quick brown fox",
    "hello world, this is",
    "question: what is the refund window?",
    "question: who approves travel? answer:",
    "according to the handbook",
    "sources [1] [2]",
    "answer: yes",
    "the lazy dog jumps over",
    "loraplex speaking: the",
    "who approves the refund",
    "what is the window",
    "hello hello world",
    "the handbook says",
    "answer: no, the manager",
    "quick quick brown",
    "question: travel?",
    "this is the answer",
    "world, fox, dog",
]
NEW_TOKENS = 32
NUM_ADAPTERS = 64
MAX_LORAS = 8
RANK = 8


def workload(distinct: int, rounds: int) -> list[list[int | None]]:
    """Per round, the adapter index of each prompt (None = base model)."""
    batches = []
    for round_idx in range(rounds):
        batch: list[int | None] = []
        counter = round_idx * len(PROMPTS)
        for row in range(len(PROMPTS)):
            if distinct == 0 or row % 3 == 2:
                batch.append(None)
            else:
                batch.append(counter % distinct)
                counter += 1
        batches.append(batch)
    return batches


def run_vllm(
    model: Path, adapters: Path, lora: bool, cpu_loras: int, rows: list, rounds: int, eager: bool
):
    """One engine; returns {row name: tok/s} for the given (name, distinct) rows."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    kwargs = {}
    if lora:
        kwargs = {
            "enable_lora": True,
            "max_lora_rank": RANK,
            "max_loras": MAX_LORAS,
            "max_cpu_loras": cpu_loras,
        }
    llm = LLM(
        model=str(model),
        dtype="float32",
        max_model_len=256,
        kv_cache_memory_bytes=256 * 1024 * 1024,
        seed=0,
        enforce_eager=eager,
        **kwargs,
    )
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)

    def request(index: int | None) -> LoRARequest | None:
        if index is None:
            return None
        return LoRARequest(f"a{index}", index + 1, str(adapters / f"a{index}"))

    def one_pass(batches: list[list[int | None]]) -> float:
        tokens = 0
        start = time.perf_counter()
        for batch in batches:
            outs = llm.generate(
                PROMPTS, params, lora_request=[request(i) for i in batch], use_tqdm=False
            )
            tokens += sum(len(o.outputs[0].token_ids) for o in outs)
        return tokens / (time.perf_counter() - start)

    results = {}
    for name, distinct in rows:
        batches = workload(distinct, rounds)
        one_pass(batches)
        results[name] = one_pass(batches)
    return results


def run_peft(model: Path, adapters: Path, rows: list, rounds: int):
    """transformers + peft, batch of 18 with per-row `adapter_names`, the same workload."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.eos_token
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, adapters / "a0", adapter_name="a0")
    for index in range(1, NUM_ADAPTERS):
        peft_model.load_adapter(adapters / f"a{index}", adapter_name=f"a{index}")
    peft_model.eval()
    encoded = tokenizer(PROMPTS, return_tensors="pt", padding=True)

    def one_pass(batches: list[list[int | None]]) -> float:
        tokens = 0
        start = time.perf_counter()
        for batch in batches:
            names = ["__base__" if i is None else f"a{i}" for i in batch]
            with torch.inference_mode():
                out = peft_model.generate(
                    **encoded,
                    adapter_names=names,
                    do_sample=False,
                    max_new_tokens=NEW_TOKENS,
                    min_new_tokens=NEW_TOKENS,
                    pad_token_id=tokenizer.pad_token_id,
                )
            tokens += (out.shape[1] - encoded["input_ids"].shape[1]) * out.shape[0]
        return tokens / (time.perf_counter() - start)

    results = {}
    for name, distinct in rows:
        batches = workload(distinct, rounds)
        one_pass(batches[:1])
        results[name] = one_pass(batches)
    return results


MIXED_ROWS = [("1 adapter mixed", 1), ("8 adapters mixed", 8), ("64 adapters mixed", 64)]
CONFIGS = {
    "disabled": {"lora": False, "rows": [("LoRA disabled", 0)]},
    # vLLM's CPU platform turns torch.compile off whenever LoRA is enabled: this row separates
    # that cost from the LoRA ops' own.
    "eager": {"lora": False, "eager": True, "rows": [("LoRA disabled, eager", 0)]},
    "large": {"lora": True, "cpu_loras": NUM_ADAPTERS, "rows": [("base requests", 0), *MIXED_ROWS]},
    "small": {"lora": True, "cpu_loras": MAX_LORAS, "rows": [("64 mixed, cache too small", 64)]},
    # The plugin keeps torch.compile on with LoRA; this config turns that off (vLLM's default
    # eager mode with LoRA) to separate what compilation buys from what the grouped ops buy.
    "plugin-eager": {
        "lora": True,
        "cpu_loras": NUM_ADAPTERS,
        "plugin_only": True,
        "env": {"LORAPLEX_CPU_LORA_COMPILE": "0"},
        "rows": [("base requests, plugin eager", 0), ("8 adapters mixed, plugin eager", 8)],
    },
}


def worker(args: argparse.Namespace) -> None:
    """Runs one engine config in this process and prints its results as JSON on the last line."""
    if args.worker == "peft":
        rows = [("base requests", 0), *MIXED_ROWS]
        results = run_peft(args.model_dir, args.adapters, rows, args.rounds)
    else:
        config = CONFIGS[args.worker]
        results = run_vllm(
            args.model_dir,
            args.adapters,
            config["lora"],
            config.get("cpu_loras", MAX_LORAS),
            config["rows"],
            args.rounds,
            config.get("eager", False),
        )
    print("RESULT " + json.dumps(results), flush=True)


def spawn(args: argparse.Namespace, name: str, plugin: bool) -> dict[str, float]:
    env = dict(os.environ, LORAPLEX_CPU_LORA="1" if plugin else "0")
    env.update(CONFIGS.get(name, {}).get("env", {}))
    command = [sys.executable, __file__, "--worker", name, "--rounds", str(args.rounds)]
    command += ["--model-dir", str(args.model_dir), "--adapters", str(args.adapters)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr[-4000:])
        raise RuntimeError(f"bench worker {name} (plugin={plugin}) failed")
    return json.loads(lines[-1].removeprefix("RESULT "))


def base_model(args: argparse.Namespace, tmp: Path) -> Path:
    if args.model == "tiny":
        return build_tiny_llama(tmp / "base", args.hidden, args.layers, args.heads)
    from services.models.store import DEFAULT_MODEL, MANIFEST, ModelStore

    store = ModelStore(DEMO_MODELS)
    if (store.path(DEFAULT_MODEL) / MANIFEST).exists():
        return store.path(DEFAULT_MODEL)
    return ModelStore(tmp / "models").import_model().path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    parser.add_argument("--hidden", type=int, default=512, help="tiny model only")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--rounds", type=int, help="batches per row (default 2, tiny: 4)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--adapters", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 4 if args.model == "tiny" else 2
    if args.worker:
        worker(args)
        return
    with tempfile.TemporaryDirectory(prefix="cpu-lora-bench-") as tmp:
        args.model_dir = base_model(args, Path(tmp))
        args.adapters = Path(tmp) / "adapters"
        for index in range(NUM_ADAPTERS):
            make_random_lora(
                args.adapters / f"a{index}", args.model_dir, RANK, index + 1, TARGET_MODULES, 0.05
            )
        table: dict[str, dict[str, float]] = {}
        for name in ("disabled", "eager", "large", "small", "plugin-eager"):
            config = CONFIGS[name]
            plugins = (
                (False,)
                if not config["lora"]
                else (True,)
                if config.get("plugin_only")
                else (False, True)
            )
            for plugin in plugins:
                for row, tok_s in spawn(args, name, plugin).items():
                    table.setdefault(row, {})["plugin" if plugin else "vllm"] = tok_s
        for row, tok_s in spawn(args, "peft", False).items():
            table.setdefault(row, {})["peft"] = tok_s
    print_table(table, args)


def print_table(table: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    disabled = table["LoRA disabled"]["vllm"]
    model = (
        f"random Llama hidden={args.hidden} layers={args.layers}"
        if args.model == "tiny"
        else "SmolLM2-135M-Instruct"
    )
    print(
        f"\n{model}, fp32, {len(PROMPTS)} prompts x {NEW_TOKENS} new tokens x {args.rounds} "
        f"rounds, greedy; rank {RANK} on all linear layers, max_loras={MAX_LORAS}; "
        f"{os.cpu_count()} CPUs\n"
    )
    header = (
        "| workload | vLLM tok/s | vLLM+plugin tok/s | peft tok/s | plugin/disabled | plugin/peft |"
    )
    print(header)
    print("|---|---|---|---|---|---|")
    for row, cells in table.items():
        plugin = cells.get("plugin")
        peft = cells.get("peft")

        def fmt(value: float | None, ratio: bool = False) -> str:
            if value is None:
                return "-"
            return f"{value:.2f}x" if ratio else f"{value:.1f}"

        print(
            f"| {row} | {fmt(cells.get('vllm'))} | {fmt(plugin)} | {fmt(peft)} "
            f"| {fmt(plugin / disabled if plugin else None, True)} "
            f"| {fmt(plugin / peft if plugin and peft else None, True)} |"
        )


if __name__ == "__main__":
    main()
