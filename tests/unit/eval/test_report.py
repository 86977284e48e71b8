"""Summary over configurations and seeds: aggregation, reference rows, differences, goals."""

from __future__ import annotations

import json

from loraplex.eval.questions import Fact, Question
from loraplex.eval.report import markdown, summarize, to_json
from loraplex.eval.runner import (
    ABSTAIN,
    EXTRACTIVE,
    EvalConfig,
    EvalRun,
    EvalSettings,
    add_references,
    load_run,
)
from loraplex.eval.scoring import Answer, Passage

PASSAGE = "Travel abroad needs approval from the Regional Director via form TR-7."
QUESTIONS = [
    Question(f"a{i}", "single", "who approves trips abroad?", (Fact("Regional Director"),))
    for i in range(8)
] + [Question(f"u{i}", "unanswerable", "can I bring my dog?", expect="decline") for i in range(2)]
RIGHT = "The Regional Director approves it. [1]"


def given(text: str) -> Answer:
    return Answer(text, (Passage(1, PASSAGE, "[1]" in text, "02-travel"),))


def make_run() -> EvalRun:
    """base+RAG right on 2 of 8; tuned (3 seeds) right on 4, 6 and 8 of 8 and declines."""
    configs = [EvalConfig("base+RAG"), EvalConfig("tuned", ("t@1", "t@2", "t@3"))]
    run = EvalRun(QUESTIONS, configs, EvalSettings(collection="handbook"))
    run.answers["base+RAG"] = [
        [given(RIGHT if i < 2 else "Your manager. [1]") for i in range(8)] + [given("Yes. [1]")] * 2
    ]
    run.answers["tuned"] = [
        [given(RIGHT if i < right else "The sources do not say.") for i in range(8)]
        + [given("The sources do not say.")] * 2
        for right in (4, 6, 8)
    ]
    run.seeds = {"base+RAG": ["base"], "tuned": ["t@1", "t@2", "t@3"]}
    add_references(run)
    return run


def figure(summary, name, group, metric):
    config = next(c for c in summary["configs"] if c["name"] == name)
    return config["metrics"][group][metric]


def test_seeds_are_pooled_and_spread_is_reported():
    summary = summarize(make_run())
    tuned = figure(summary, "tuned", "answerable", "correct")
    assert tuned["value"] == 0.75  # (4 + 6 + 8) / 24
    assert tuned["per_seed"] == [0.5, 0.75, 1.0]
    assert tuned["seeds"]["sd"] == 0.25
    assert tuned["low"] <= 0.75 <= tuned["high"]
    assert figure(summary, "tuned", "unanswerable", "correct_refusal")["value"] == 1.0
    assert figure(summary, "base+RAG", "answerable", "correct")["value"] == 0.25


def test_reference_rows_are_always_there():
    summary = summarize(make_run())
    names = [c["name"] for c in summary["configs"]]
    assert names == ["base+RAG", "tuned", EXTRACTIVE, ABSTAIN]
    assert figure(summary, ABSTAIN, "answerable", "correct")["value"] == 0.0
    assert figure(summary, ABSTAIN, "unanswerable", "correct_refusal")["value"] == 1.0
    assert figure(summary, EXTRACTIVE, "answerable", "correct")["value"] == 1.0
    assert figure(summary, EXTRACTIVE, "unanswerable", "correct_refusal")["value"] == 0.0


def test_differences_goals_and_markdown():
    summary = summarize(make_run())
    diff = next(
        d for d in summary["differences"]
        if d["a"] == "tuned" and d["b"] == "base+RAG" and d["metric"] == "correct"
    )  # fmt: skip
    assert diff["diff"] == 0.5 and diff["low"] > 0 and diff["mcnemar_p"] is not None
    assert summary["target"] == "tuned"
    assert summary["goals"]["declines_unanswerable"]["met"] is True
    assert summary["goals"]["false_refusals"]["met"] is False  # 25% false refusals
    assert summary["goals"]["correct_vs_extractive"]["met"] is False
    text = markdown(summary, "## demo")
    assert "| tuned | 3 | 75% (" in text and "*extractive baseline*" in text
    assert "false refusals ≤ 15%: **NOT met**" in text


def test_results_json_scores_again_to_the_same_figures():
    summary = summarize(make_run())
    again = summarize(load_run(json.loads(to_json(summary)), QUESTIONS))
    assert again["configs"] == summary["configs"]
    assert again["differences"] == summary["differences"]
