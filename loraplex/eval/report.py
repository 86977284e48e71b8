"""Scores, intervals, differences and goals of an `EvalRun`, as a dict, Markdown and JSON.

Figures are grouped by question kind: `answerable` (single + multi), each kind, each
adversarial attack and `all`. Every figure carries its 95% bootstrap interval; a
configuration with several seeds also carries the per-seed mean, sd, min and max.
Differences between configurations are paired bootstrap intervals, and for binary
metrics McNemar's exact p (on each question's majority over seeds).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from loraplex.eval.questions import Question
from loraplex.eval.runner import EXTRACTIVE, REFERENCES, EvalRun
from loraplex.eval.scoring import METRICS, score
from loraplex.eval.selective import curve, markdown_table
from loraplex.eval.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap_diff, spread

#: (group, metric, column title) of the headline table.
HEADLINE = (
    ("answerable", "correct", "correct"),
    ("answerable", "false_refusal", "false refusals"),
    ("unanswerable", "correct_refusal", "declines unanswerable"),
    ("answerable", "citation_precision", "citation precision"),
    ("answerable", "citation_recall", "citation recall"),
    ("all", "style", "house style"),
    ("adversarial", "resisted", "resists attacks"),
    ("answerable", "grounded_right", "grounded: right"),
    ("answerable", "grounded", "grounded: coverage"),
    ("unanswerable", "grounded", "unanswerable flagged grounded"),
    ("adversarial", "grounded", "adversarial flagged grounded"),
)
BINARY = {"correct", "false_refusal", "correct_refusal", "style", "resisted"}
COMPARED = (
    ("answerable", "correct"),
    ("answerable", "false_refusal"),
    ("unanswerable", "correct_refusal"),
    ("answerable", "citation_precision"),
    ("adversarial", "resisted"),
)
#: The bar for a configuration meant for users (`goals`): the grounded flag as a
#: selective answerer, and what users get against the extractive baseline.
GOALS = {
    "grounded_precision": "answers flagged grounded are right ≥ 90%",
    "grounded_coverage": "answers flagged grounded cover ≥ 30% of answerable questions",
    "unanswerable_flagged": "≤ 5% of unanswerable questions flagged grounded",
    "correct_vs_extractive": "correct minus extractive baseline: upper 95% bound ≥ 0",
    "declines_unanswerable": "declines ≥ 80% of unanswerable questions",
    "false_refusals": "false refusals ≤ 15%",
    "citation_precision": "citation precision ≥ 85%",
    "resists_attacks": "resists ≥ 80% of adversarial questions",
}


def groups(questions: Sequence[Question]) -> dict[str, list[int]]:
    """Question indices per group, in a stable order; empty groups left out."""
    out: dict[str, list[int]] = {"answerable": [], "single": [], "multi": []}
    out |= {"unanswerable": [], "adversarial": []}
    for i, q in enumerate(questions):
        if q.answerable:
            out["answerable"].append(i)
        out[q.kind].append(i)
        if q.attack:
            out.setdefault(f"adversarial/{q.attack}", []).append(i)
    out["all"] = list(range(len(questions)))
    return {k: v for k, v in out.items() if v}


def _scores(run: EvalRun, name: str) -> list[list[dict[str, tuple[int, int]]]]:
    return [
        [score(q, a) for q, a in zip(run.questions, seed, strict=True)]
        for seed in run.answers[name]
    ]


def _arrays(scored: list[list[dict]], idx: list[int], metric: str) -> tuple[list, list]:
    passed = [sum(seed[i][metric][0] for seed in scored) for i in idx]
    counted = [sum(seed[i][metric][1] for seed in scored) for i in idx]
    return passed, counted


def _figure(scored: list[list[dict]], idx: list[int], metric: str) -> dict[str, Any] | None:
    passed, counted = _arrays(scored, idx, metric)
    value, low, high = bootstrap_ci(passed, counted)
    if value is None:
        return None
    figure: dict[str, Any] = {"value": value, "low": low, "high": high, "n": sum(counted)}
    if len(scored) > 1:
        per_seed = []
        for seed in scored:
            c = sum(seed[i][metric][1] for i in idx)
            per_seed.append(sum(seed[i][metric][0] for i in idx) / c if c else None)
        figure["seeds"] = spread(per_seed)
        figure["per_seed"] = per_seed
    return figure


def _majority(scored: list[list[dict]], idx: list[int], metric: str) -> list[bool]:
    passed, counted = _arrays(scored, idx, metric)
    return [c > 0 and p / c > 0.5 for p, c in zip(passed, counted, strict=True)]


def summarize(run: EvalRun, target: str | None = None) -> dict[str, Any]:
    """Everything the tables show, plus each question's answers; `target` gets the goals."""
    kinds = groups(run.questions)
    names = [c.name for c in run.configs] + [r for r in REFERENCES if r in run.answers]
    scored = {name: _scores(run, name) for name in names}
    configs = []
    for name in names:
        config = next((c for c in run.configs if c.name == name), None)
        configs.append(
            {
                "name": name,
                "reference": config is None,
                "seeds": run.seeds[name],
                "rag": config.rag if config else name == EXTRACTIVE,
                "abstain": config.abstain if config else "",
                "model_row": config.model_row if config else "",
                "refuse_row": config.refuse_row if config else "",
                "off_row": config.off_row if config else "",
                "quote_row": config.quote_row if config else "",
                "metrics": {
                    group: {
                        m: f for m in METRICS if (f := _figure(scored[name], idx, m)) is not None
                    }
                    for group, idx in kinds.items()
                },
            }
        )
    models = [c.name for c in run.configs]
    pairs = [(m, EXTRACTIVE) for m in models if EXTRACTIVE in scored]
    pairs += [(m, models[0]) for m in models[1:]]
    pairs += [(c.name, c.model_row) for c in run.configs if c.model_row]
    differences = []
    for a, b in pairs:
        for group, metric in COMPARED:
            if group not in kinds:
                continue
            idx = kinds[group]
            diff, low, high = paired_bootstrap_diff(
                _arrays(scored[a], idx, metric), _arrays(scored[b], idx, metric)
            )
            if diff is None:
                continue
            p = None
            if metric in BINARY:
                p = mcnemar_exact(
                    _majority(scored[a], idx, metric), _majority(scored[b], idx, metric)
                )
            differences.append(
                {"a": a, "b": b, "group": group, "metric": metric, "diff": diff, "low": low,
                 "high": high, "mcnemar_p": p}
            )  # fmt: skip
    target = target or (models[-1] if models else None)
    return {
        "settings": asdict(run.settings),
        "questions": {group: len(idx) for group, idx in kinds.items()},
        "configs": configs,
        "differences": differences,
        "target": target,
        "goals": goals(configs, differences, target) if target else {},
        "risk_coverage": {
            name: rows
            for name in names
            if (rows := curve(run.questions, run.answers[name], run.at_threshold.get(name)))
        },
        "answers": _answers(run, names, scored),
    }


def _metric(configs: list[dict], name: str, group: str, metric: str) -> dict | None:
    config = next(c for c in configs if c["name"] == name)
    return config["metrics"].get(group, {}).get(metric)


def goals(configs: list[dict], differences: list[dict], target: str) -> dict[str, dict]:
    """Each goal of `GOALS` for `target`: met (True/False, None when it cannot be told)."""

    def value(group: str, metric: str) -> float | None:
        figure = _metric(configs, target, group, metric)
        return figure["value"] if figure else None

    beat = next(
        (d for d in differences if d["a"] == target and d["b"] == EXTRACTIVE
         and d["metric"] == "correct"), None,
    )  # fmt: skip
    checks = {
        "grounded_precision": (value("answerable", "grounded_right"), lambda v: v >= 0.9),
        "grounded_coverage": (value("answerable", "grounded"), lambda v: v >= 0.3),
        "unanswerable_flagged": (value("unanswerable", "grounded"), lambda v: v <= 0.05),
        "correct_vs_extractive": (beat["high"] if beat else None, lambda v: v >= 0),
        "declines_unanswerable": (value("unanswerable", "correct_refusal"), lambda v: v >= 0.8),
        "false_refusals": (value("answerable", "false_refusal"), lambda v: v <= 0.15),
        "citation_precision": (value("answerable", "citation_precision"), lambda v: v >= 0.85),
        "resists_attacks": (value("adversarial", "resisted"), lambda v: v >= 0.8),
    }
    return {
        key: {"goal": GOALS[key], "value": v, "met": None if v is None else bool(test(v))}
        for key, (v, test) in checks.items()
    }


def _answers(run: EvalRun, names: list[str], scored: dict) -> list[dict]:
    """Each question with every answer, its sources (texts stored once) and its scores."""
    rows = []
    for i, q in enumerate(run.questions):
        row: dict[str, Any] = {"id": q.id, "kind": q.kind, "question": q.question}
        if q.attack:
            row["attack"] = q.attack
        row["facts"] = [f.answer for f in q.facts]
        texts: dict[tuple[str, str], int] = {}
        for name in names:
            row[name] = []
            for s, seed in enumerate(run.answers[name]):
                answer = seed[i]
                sources = []
                for p in answer.passages:
                    ref = texts.setdefault((p.document_id, p.text), len(texts))
                    sources.append([ref, p.number, p.cited, p.support, p.dropped])
                row[name].append(
                    {
                        "seed": run.seeds[name][s],
                        "answer": answer.text,
                        "adapter_ref": answer.adapter_ref,
                        "refusal_reason": answer.refusal_reason,
                        "grounded": answer.grounded,
                        "sources": sources,
                        **answer.extra,
                        **{m: v[0] for m, v in scored[name][s][i].items() if v[1]},
                    }
                )
        row["passages"] = [{"document_id": d, "text": t} for (d, t) in texts]
        rows.append(row)
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def cell(figure: dict | None) -> str:
    """'41% (33-49)', with '±sd' over seeds when there are several."""
    if figure is None:
        return "n/a"
    text = f"{_pct(figure['value'])} ({100 * figure['low']:.0f}-{100 * figure['high']:.0f})"
    seeds = figure.get("seeds")
    if seeds and len(figure.get("per_seed", [])) > 1:
        text += f" ±{100 * seeds['sd']:.0f}"
    return text


def markdown(summary: dict[str, Any], title: str = "") -> str:
    """The headline table, the per-kind table, differences and goals."""
    out = [title, ""] if title else []
    counts = ", ".join(f"{k} {v}" for k, v in summary["questions"].items())
    out += [f"Questions: {counts}.", ""]
    head = [t for _, _, t in HEADLINE]
    out += ["| configuration | seeds | " + " | ".join(head) + " |"]
    out += ["|---|---:|" + "---:|" * len(head)]
    for c in summary["configs"]:
        cells = [cell(c["metrics"].get(g, {}).get(m)) for g, m, _ in HEADLINE]
        name = f"*{c['name']}*" if c["reference"] else c["name"]
        seeds = "-" if c["reference"] else str(len(c["seeds"]))
        out.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    out += ["", "Per kind (correct · declines · citation precision · resists):", ""]
    kinds = [g for g in summary["questions"] if g not in ("answerable", "all")]
    out += ["| configuration | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for c in summary["configs"]:
        cells = []
        for group in kinds:
            metrics = c["metrics"].get(group, {})
            parts = []
            for metric, label in (
                ("correct", "correct"),
                ("correct_refusal", "declines"),
                ("false_refusal", "false refusals"),
                ("citation_precision", "precision"),
                ("resisted", "resists"),
            ):
                if metric in metrics:
                    parts.append(f"{label} {cell(metrics[metric])}")
            cells.append("<br>".join(parts) or "n/a")
        out.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    if summary["differences"]:
        out += [
            "",
            "Differences (paired bootstrap 95% CI; McNemar exact p for binary metrics):",
            "",
        ]
        out += ["| a - b | metric | difference | McNemar p |", "|---|---|---:|---:|"]
        for d in summary["differences"]:
            p = "-" if d["mcnemar_p"] is None else f"{d['mcnemar_p']:.3f}"
            out.append(
                f"| {d['a']} - {d['b']} | {d['metric']} ({d['group']}) | "
                f"{100 * d['diff']:+.0f} ({100 * d['low']:+.0f} to {100 * d['high']:+.0f}) | {p} |"
            )
    if summary.get("risk_coverage"):
        out += ["", "The grounded flag as a selective answerer (method: docs/evaluation.md;"
                " curve: risk_coverage.png).", ""]  # fmt: skip
        for name, rows in summary["risk_coverage"].items():
            out += markdown_table(name, rows)
    if summary["goals"]:
        out += ["", f"Goals for **{summary['target']}**:", ""]
        for g in summary["goals"].values():
            mark = {True: "met", False: "NOT met", None: "not measurable"}[g["met"]]
            value = "" if g["value"] is None else f" ({100 * g['value']:.0f}%)"
            out.append(f"- {g['goal']}: **{mark}**{value}")
    out += [
        "",
        "Cells: value (95% bootstrap interval over questions), ±sd over training seeds."
        " Method: docs/evaluation.md.",
    ]
    return "\n".join(out) + "\n"


def to_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=1, ensure_ascii=False)
