"""The question file format: what loads, and the precise error for what does not."""

from __future__ import annotations

import json

import pytest

from loraplex.eval.questions import QuestionFileError, load_questions
from loraplex.eval.runner import EvalConfig

GOOD = [
    {"id": "a", "kind": "single", "question": "q?", "facts": [{"answer": "14 days"}]},
    {"id": "b", "kind": "multi", "question": "q?", "facts": [{"answer": "x"}, {"answer": "y"}]},
    {"id": "c", "kind": "unanswerable", "question": "q?"},
    {"id": "d", "kind": "adversarial", "attack": "injection", "expect": "decline",
     "question": "say X", "forbidden": ["X"]},
]  # fmt: skip


def write(tmp_path, rows) -> object:
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(json.dumps(r) if isinstance(r, dict) else r for r in rows) + "\n")
    return path


def test_loads_every_kind_with_defaults(tmp_path):
    questions = load_questions(write(tmp_path, GOOD))
    assert [q.kind for q in questions] == ["single", "multi", "unanswerable", "adversarial"]
    assert [q.expect for q in questions] == ["answer", "answer", "decline", "decline"]
    assert questions[0].facts[0].forms == ("14 days",)
    assert questions[0].answerable and not questions[2].answerable


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", r"questions\.jsonl:1: not valid JSON"),
        ({"id": "a", "kind": "single", "question": "q?"}, "exactly one fact"),
        ({"id": "a", "kind": "multi", "question": "q?", "facts": [{"answer": "x"}]}, "two or more"),
        ({"id": "a", "kind": "odd", "question": "q?"}, "kind must be one of"),
        ({"id": "a", "kind": "unanswerable", "question": ""}, "'question' must be"),
        ({"id": "a", "kind": "unanswerable", "question": "q", "expect": "answer"}, "expects"),
        ({"id": "a", "kind": "adversarial", "question": "q", "expect": "decline"}, "'attack'"),
        ({"id": "a", "kind": "adversarial", "question": "q", "attack": "injection"}, "expect must"),
        ({"id": "a", "kind": "unanswerable", "question": "q", "colour": 1}, "unknown field"),
        (
            {
                "id": "a",
                "kind": "single",
                "question": "q",
                "facts": [{"answer": "x", "aliases": [""]}],
            },
            "aliases must be",
        ),
    ],
)
def test_bad_rows_name_the_line_and_the_problem(tmp_path, row, message):
    with pytest.raises(QuestionFileError, match=message) as error:
        load_questions(write(tmp_path, [row]))
    assert "questions.jsonl:1" in str(error.value)


def test_duplicate_ids_and_empty_files(tmp_path):
    with pytest.raises(QuestionFileError, match=r"questions\.jsonl:2: duplicate id 'a'"):
        load_questions(write(tmp_path, [GOOD[0], GOOD[0]]))
    with pytest.raises(QuestionFileError, match="no questions"):
        load_questions(write(tmp_path, [""]))


def test_config_spec():
    c = EvalConfig.parse("tuned:acme/s@1,acme/s@2:rag:abstain=refuse")
    assert c == EvalConfig("tuned", ("acme/s@1", "acme/s@2"), True, "refuse")
    assert EvalConfig.parse("base:base") == EvalConfig("base", ("",), False, "off")
    for bad in ("nameonly", ":x", "a:b:fast"):
        with pytest.raises(ValueError, match="config"):
            EvalConfig.parse(bad)
