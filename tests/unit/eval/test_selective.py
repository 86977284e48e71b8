"""The grounded flag as a selective answerer; policy rows from one set of generations;
the 80-column CLI table."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from loraplex.cli import evaluation
from loraplex.eval.questions import Fact, Question
from loraplex.eval.report import markdown, summarize, to_json
from loraplex.eval.runner import EvalConfig, EvalSettings, load_run, run_eval
from loraplex.eval.scoring import Answer, Passage
from loraplex.eval.selective import curve, plot
from loraplex.inference.v1 import inference_service_pb2 as pb
from services.inference.relevance import DEFAULT_ABSTAIN_THRESHOLD, DEFAULT_THRESHOLD

PASSAGE = "The Tern battery pack is covered for 12 months only. Returns take 30 days."
TERN = Question("t", "single", "How long is the Tern battery pack covered?", (Fact("12 months"),))
DOG = Question("d", "unanswerable", "Can I bring my dog to the office?", expect="decline")


def scored(text: str, score: float) -> Answer:
    extra = {"grounding_score": score, "grounded_threshold": 0.5}
    return Answer(text, (Passage(1, PASSAGE, True),), grounded=score >= 0.5, extra=extra)


def test_risk_and_coverage_over_thresholds():
    questions = [TERN, TERN, TERN, DOG]
    seed = [
        scored("It is covered for 12 months. [1]", 0.9),  # right, sure
        scored("It is covered for 30 days. [1]", 0.6),  # wrong, fairly sure
        scored("It is covered for 12 months. [1]", 0.2),  # right, unsure
        scored("Returns take 30 days. [1]", 0.55),  # unanswerable, flagged at 0.5
    ]
    rows = {r["threshold"]: r for r in curve(questions, [seed])}
    assert rows[0.5]["served"] and not rows[0.9]["served"]
    assert rows[0.5]["precision"]["value"] == 0.5 and rows[0.5]["coverage"]["value"] == 2 / 3
    assert rows[0.5]["unanswerable"]["value"] == 1.0
    assert rows[0.7]["precision"]["value"] == 1.0 and rows[0.7]["coverage"]["value"] == 1 / 3
    assert rows[0.7]["unanswerable"]["value"] == 0.0
    assert rows[0.1]["coverage"]["value"] == 1.0
    low, high = rows[0.5]["precision"]["low"], rows[0.5]["precision"]["high"]
    assert 0 <= low <= 0.5 <= high <= 1
    assert curve(questions, [[Answer("x")] * 4]) is None  # no scores: no curve


def test_the_curve_is_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    seed = [scored("It is covered for 12 months. [1]", 0.9), scored("Returns. [1]", 0.3)]
    path = plot({"row": curve([TERN, DOG], [seed])}, tmp_path / "risk_coverage.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Served:
    """The service under QUOTE: its served text, and the model's own in generated_text."""

    def generate(self, **kwargs: object) -> pb.GenerationResult:
        own = "Returns take 30 days. [1]"
        return pb.GenerationResult(
            text=own, generated_text=own, grounded=False, grounding_score=0.1,
            grounded_threshold=DEFAULT_THRESHOLD, abstain_threshold=DEFAULT_ABSTAIN_THRESHOLD,
            checked_text=own, checked_score=0.1,
            citations=[pb.Citation(number=1, cited=True, text=PASSAGE)],
            adapter_ref="acme/s@1",
        )  # fmt: skip


def test_policy_rows_judge_the_same_generations_by_the_service_check():
    config = EvalConfig.parse(
        "served:acme/s@1:rag:abstain=quote:model=own:off=off:refuse=refuse:quote=quote"
    )
    assert config.policy_rows == {"off": "off", "refuse": "refuse", "quote": "quote"}
    with pytest.raises(ValueError, match="policy rows need RAG"):
        EvalConfig.parse("x:base:refuse=r")
    run = run_eval(_Served(), [TERN, DOG], [config], EvalSettings(collection="h"))  # type: ignore[arg-type]
    names = [c.name for c in run.configs]
    assert names[:5] == ["own", "off", "refuse", "quote", "served"]
    off, refuse, quote = (run.answers[n][0][0] for n in ("off", "refuse", "quote"))
    assert off.text == "Returns take 30 days. [1]" and not off.grounded
    assert refuse.text == "The sources do not say." and refuse.refused
    assert quote.extra.get("quoted") and "12 months" in quote.text and quote.grounded
    assert quote.extra["grounded_threshold"] == DEFAULT_THRESHOLD
    assert quote.extra["abstain_threshold"] == DEFAULT_ABSTAIN_THRESHOLD
    # the extractive row is judged by the same check and threshold
    extractive = run.answers["extractive baseline"][0][0]
    assert extractive.extra["grounded_threshold"] == DEFAULT_THRESHOLD
    assert extractive.grounded is not None
    # REFUSE and QUOTE serve different text at another threshold: judged again there
    assert set(run.at_threshold) == {"served"}  # the configuration asked, not its policy rows
    judged = run.at_threshold["served"]
    assert all(judged[t][0][0].extra["grounded_threshold"] == t for t in judged)
    summary = summarize(run, "quote")
    rows = summary["risk_coverage"]["served"]
    assert all(r["rejudged"] for r in rows if not r["served"])
    assert "Risk-coverage of **served** (the policy judged again" in markdown(summary)
    assert set(summary["goals"]) >= {"grounded_precision", "unanswerable_flagged"}
    again = summarize(load_run(json.loads(to_json(summary)), [TERN, DOG]), "quote")
    assert again["configs"] == summary["configs"]


def test_the_cli_table_fits_80_columns_with_whole_names(monkeypatch):
    config = EvalConfig("adapter+RAG+safeguards+quote", ("a@1", "a@2"), True, "quote",
                        off_row="adapter+RAG+safeguards+off")  # fmt: skip
    run = run_eval(_Served(), [TERN, DOG], [config], EvalSettings(collection="h"))  # type: ignore[arg-type]
    out = io.StringIO()
    monkeypatch.setattr(evaluation, "console", Console(file=out, width=80, force_terminal=False))
    evaluation.print_table(summarize(run))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "adapter+RAG+safeguards+quote (2 seed(s))" in lines
    assert "adapter+RAG+safeguards+off (2 seed(s))" in lines
    assert any("grounded: right" in line for line in lines)
