"""`loraplex eval`: score a question file against the inference service, with intervals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loraplex.cli.common import AddressOption, ApiKeyOption, console, err_console, reported_errors
from loraplex.client.inference import InferenceClient
from loraplex.eval import EvalConfig, EvalSettings, QuestionFileError, load_questions
from loraplex.eval.report import HEADLINE, cell, markdown, summarize, to_json
from loraplex.eval.runner import load_run, run_eval

CONFIG_HELP = (
    "NAME:ADAPTERS[:rag][:abstain=refuse|quote][:model=ROW], repeatable; ADAPTERS"
    " comma-separated (several = training seeds of one configuration), 'base' for the base"
    " model; model=ROW also scores the model's own text, before the service's checks."
    " Example: 'tuned+RAG:acme/support@1,acme/support@2,acme/support@3:rag'"
)


def write_results(summary: dict, out: Path, title: str) -> tuple[Path, Path]:
    """results.json (every figure and answer) and results.md (the tables) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(to_json(summary), encoding="utf-8")
    (out / "results.md").write_text(markdown(summary, title), encoding="utf-8")
    return out / "results.json", out / "results.md"


def print_table(summary: dict) -> None:
    table = Table("configuration", "seeds", *(t for _, _, t in HEADLINE), title="evaluation")
    for c in summary["configs"]:
        table.add_row(
            c["name"],
            "-" if c["reference"] else str(len(c["seeds"])),
            *(cell(c["metrics"].get(g, {}).get(m)) for g, m, _ in HEADLINE),
        )
    console.print(table)
    for goal in summary["goals"].values():
        mark = {True: "[green]met[/green]", False: "[red]not met[/red]", None: "n/a"}[goal["met"]]
        console.print(f"{summary['target']}: {goal['goal']}: {mark}")


def eval_(
    questions: Annotated[Path, typer.Argument(help="JSONL question file (see docs/evaluation.md)")],
    config: Annotated[list[str], typer.Option("--config", help=CONFIG_HELP)] = [],  # noqa: B006
    collection: Annotated[str, typer.Option(help="collection RAG configurations search")] = "",
    top_k: Annotated[int, typer.Option(help="chunks to retrieve")] = 3,
    max_tokens: Annotated[int, typer.Option()] = 48,
    concurrency: Annotated[int, typer.Option(help="requests in flight")] = 16,
    limit: Annotated[int, typer.Option(help="only the first N questions (0: all)")] = 0,
    target: Annotated[str, typer.Option(help="configuration the goals are checked for")] = "",
    out: Annotated[Path | None, typer.Option(help="folder for results.json and results.md")] = None,
    title: Annotated[str, typer.Option(help="heading of results.md")] = "",
    rescore: Annotated[
        Path | None,
        typer.Option(help="score the answers stored in a results.json again; asks nothing"),
    ] = None,
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Ask every question in every configuration and score what users get (95% intervals)."""
    try:
        rows = load_questions(questions)
        configs = [EvalConfig.parse(spec) for spec in config]
        stored = load_run(json.loads(rescore.read_text("utf-8")), rows) if rescore else None
    except (QuestionFileError, ValueError, KeyError, OSError) as error:
        err_console.print(f"[red]error[/red] {error}")
        raise typer.Exit(2) from None
    if stored is not None:
        _report(summarize(stored, target or None), out, title)
        return
    if not configs:
        err_console.print("[red]error[/red] give at least one --config")
        raise typer.Exit(2)
    if limit:
        rows = rows[:limit]
    settings = EvalSettings(
        collection=collection, top_k=top_k, max_tokens=max_tokens, concurrency=concurrency
    )
    with (
        reported_errors(),
        InferenceClient(address, api_key) as client,
        Progress(
            TextColumn("[bold]asking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err_console,
        ) as bar,
    ):  # fmt: skip
        task = bar.add_task("ask", total=None)
        try:
            run = run_eval(
                client, rows, configs, settings,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
        except ValueError as error:
            err_console.print(f"[red]error[/red] {error}")
            raise typer.Exit(2) from None
    _report(summarize(run, target or None), out, title)


def _report(summary: dict, out: Path | None, title: str) -> None:
    print_table(summary)
    if out is not None:
        json_path, md_path = write_results(summary, out, title)
        console.print(f"results: {json_path}, {md_path}")
