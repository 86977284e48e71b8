"""The `grounded` flag read as a selective answerer: risk and coverage over thresholds.

A user who trusts only answers flagged grounded gets a selective answerer: it answers
(flags) some questions and abstains on the rest. At a threshold t an answer is flagged
when its grounding score (`grounding_score`, calibrated, from the service) is at least
t. Per threshold, over the answerable questions:

* `precision`: right among flagged (1 - risk);
* `coverage`: flagged among answerable;
* `unanswerable`: flagged among unanswerable questions (each one a confident wrong
  answer), and `adversarial` likewise.

Every figure carries its 95% bootstrap interval over questions (seeds pooled per
question, as the other metrics). For a row whose served text does not depend on the
threshold (OFF, the extractive baseline) the served answers are re-thresholded; for a
REFUSE or QUOTE configuration asked of the service, whose served text does, the
evaluation judges the model's text again at every threshold (`EvalRun.at_threshold`,
`runner.add_policy_curves`), so each point is what that policy would have served
there. Policy rows derived from another configuration are re-thresholded only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loraplex.eval.questions import Question
from loraplex.eval.scoring import Answer, is_correct
from loraplex.eval.stats import bootstrap_ci

THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def score_of(answer: Answer) -> float | None:
    value = answer.extra.get("grounding_score")
    return None if value is None else float(value)


def threshold_of(seeds: Sequence[Sequence[Answer]]) -> float | None:
    """The threshold the service judged these answers by (the first one it reported)."""
    for seed in seeds:
        for answer in seed:
            if "grounded_threshold" in answer.extra:
                return round(float(answer.extra["grounded_threshold"]), 4)
    return None


def _figure(passed: list[int], counted: list[int]) -> dict[str, Any] | None:
    value, low, high = bootstrap_ci(passed, counted)
    if value is None:
        return None
    return {"value": value, "low": low, "high": high, "n": sum(counted)}


def curve(
    questions: Sequence[Question],
    seeds: Sequence[Sequence[Answer]],
    served_at: Mapping[float, Sequence[Sequence[Answer]]] | None = None,
) -> list[dict[str, Any]] | None:
    """Risk and coverage at every threshold of `THRESHOLDS` (and the served one), or None
    when the answers carry no score. `served_at` holds, per threshold, what the policy
    served at that threshold (flagged: their own `grounded`)."""
    if not any((score_of(a) or 0.0) > 0 for seed in seeds for a in seed):
        return None  # no score, or nothing ever scored: no curve to draw
    served = threshold_of(seeds)
    levels = sorted({*THRESHOLDS, *([served] if served is not None else [])})
    rows = []
    for t in levels:
        exact = served_at is not None and t in served_at
        answers = served_at[t] if exact else seeds  # type: ignore[index]
        right = [[is_correct(q, a) for q, a in zip(questions, s, strict=True)] for s in answers]
        if exact:
            flagged = [[bool(a.grounded) for a in seed] for seed in answers]
        else:
            flagged = [[(score_of(a) or 0.0) >= t for a in seed] for seed in answers]
        answerable = [i for i, q in enumerate(questions) if q.answerable and q.facts]
        row: dict[str, Any] = {"threshold": t, "served": t == served, "rejudged": exact}
        hits = [sum(f[i] and r[i] for f, r in zip(flagged, right, strict=True)) for i in answerable]
        shown = [sum(f[i] for f in flagged) for i in answerable]
        row["precision"] = _figure(hits, shown)
        row["coverage"] = _figure(shown, [len(seeds)] * len(answerable))
        for kind in ("unanswerable", "adversarial"):
            idx = [i for i, q in enumerate(questions) if q.kind == kind]
            row[kind] = _figure([sum(f[i] for f in flagged) for i in idx], [len(seeds)] * len(idx))
        rows.append(row)
    return rows


def _pct(figure: dict | None) -> str:
    if figure is None:
        return "-"
    return f"{100 * figure['value']:.0f}% ({100 * figure['low']:.0f}-{100 * figure['high']:.0f})"


def markdown_table(name: str, rows: list[dict[str, Any]]) -> list[str]:
    how = (
        "the policy judged again at each threshold"
        if any(r.get("rejudged") for r in rows)
        else "flagged = grounding score ≥ threshold"
    )
    out = [
        f"Risk-coverage of **{name}** ({how}; * = served):",
        "",
        "| threshold | precision (right / flagged) | coverage (flagged / answerable) |"
        " unanswerable flagged | adversarial flagged |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        mark = "*" if row["served"] else ""
        out.append(
            f"| {row['threshold']:.2f}{mark} | {_pct(row['precision'])} | {_pct(row['coverage'])}"
            f" | {_pct(row['unanswerable'])} | {_pct(row['adversarial'])} |"
        )
    return [*out, ""]


def plot(curves: dict[str, list[dict[str, Any]]], path: Path) -> Path | None:
    """Precision over coverage, one line per configuration, the served threshold marked;
    None when matplotlib is not installed (`pip install loraplex[plot]`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, rows in curves.items():
        points = [r for r in rows if r["precision"] and r["coverage"]]
        xs = [100 * r["coverage"]["value"] for r in points]
        ys = [100 * r["precision"]["value"] for r in points]
        (line,) = ax.plot(xs, ys, marker=".", label=name)
        for r in points:
            if r["served"]:
                x, y = 100 * r["coverage"]["value"], 100 * r["precision"]["value"]
                ax.errorbar(
                    x, y,
                    xerr=[[x - 100 * r["coverage"]["low"]], [100 * r["coverage"]["high"] - x]],
                    yerr=[[y - 100 * r["precision"]["low"]], [100 * r["precision"]["high"] - y]],
                    color=line.get_color(), marker="o", capsize=3,
                )  # fmt: skip
                ax.annotate(f"t={r['threshold']:.2f}", (x, y), textcoords="offset points",
                            xytext=(5, 5), fontsize=8)  # fmt: skip
    ax.axhline(90, color="grey", linestyle=":", linewidth=1)
    ax.axvline(30, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("coverage: answerable questions flagged grounded (%)")
    ax.set_ylabel("precision: flagged answers that are right (%)")
    ax.set_title("Grounded flag as a selective answerer (95% CI at the served threshold)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
