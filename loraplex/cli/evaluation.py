"""`loraplex eval`: score a question file against the inference service, with intervals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loraplex.cli.common import AddressOption, ApiKeyOption, console, err_console, reported_errors
from loraplex.client.inference import InferenceClient
from loraplex.eval import EvalConfig, EvalSettings, QuestionFileError, load_questions
from loraplex.eval.report import HEADLINE, cell, markdown, summarize, to_json
from loraplex.eval.runner import (
    add_policy_curves,
    add_policy_rows,
    load_run,
    recheck_run,
    run_eval,
)
from loraplex.eval.selective import plot

CONFIG_HELP = (
    "NAME:ADAPTERS[:rag][:abstain=refuse|quote][:model=ROW][:off|refuse|quote=ROW],"
    " repeatable; ADAPTERS comma-separated (several = training seeds of one configuration),"
    " 'base' for the base model; model=ROW also scores the model's own text, before the"
    " service's checks; off/refuse/quote=ROW the same generations under that policy."
    " Example: 'tuned+RAG:acme/support@1,acme/support@2,acme/support@3:rag'"
)


def write_results(summary: dict, out: Path, title: str) -> list[Path]:
    """results.json (every figure and answer), results.md (the tables) and, with
    matplotlib, risk_coverage.png (the grounded flag's curve) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(to_json(summary), encoding="utf-8")
    (out / "results.md").write_text(markdown(summary, title), encoding="utf-8")
    written = [out / "results.json", out / "results.md"]
    if summary.get("risk_coverage"):
        png = plot(summary["risk_coverage"], out / "risk_coverage.png")
        if png is None:
            err_console.print("no risk_coverage.png: matplotlib is not installed (loraplex[plot])")
        else:
            written.append(png)
    return written


def print_table(summary: dict) -> None:
    """One block per configuration, two metrics a line: fits 80 columns, names whole."""
    console.print("[bold]evaluation[/bold] (value, 95% interval, ±sd over seeds)")
    for c in summary["configs"]:
        seeds = "no model" if c["reference"] else f"{len(c['seeds'])} seed(s)"
        console.print(f"\n[bold]{escape(c['name'])}[/bold] ({seeds})")
        cells = [
            f"{SHORT[title]:<17}{cell(figure):<19}"
            for group, metric, title in HEADLINE
            if (figure := c["metrics"].get(group, {}).get(metric)) is not None
        ]
        for i in range(0, len(cells), 2):
            console.print("  " + " ".join(cells[i : i + 2]).rstrip(), highlight=False)
    console.print()
    for goal in summary["goals"].values():
        mark = {True: "[green]met[/green]", False: "[red]not met[/red]", None: "n/a"}[goal["met"]]
        console.print(f"{escape(summary['target'])}: {goal['goal']}: {mark}")


#: Column titles cut to fit two metrics a line in 80 columns.
SHORT = {
    "correct": "correct",
    "false refusals": "false refusals",
    "declines unanswerable": "declines unansw.",
    "citation precision": "citation prec.",
    "citation recall": "citation recall",
    "house style": "house style",
    "resists attacks": "resists attacks",
    "grounded: right": "grounded: right",
    "grounded: coverage": "grounded: cover",
    "unanswerable flagged grounded": "unansw. grounded",
    "adversarial flagged grounded": "advers. grounded",
}


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
    recheck: Annotated[
        bool,
        typer.Option(
            help="with --rescore: judge the stored generations again by the current grounding"
            " check (each configuration's policy, its policy rows, the served thresholds)"
        ),
    ] = False,
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
        if recheck:
            recheck_run(stored)
            add_policy_rows(stored)
            add_policy_curves(stored)
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
        written = write_results(summary, out, title)
        console.print(f"results: {', '.join(str(p) for p in written)}")
