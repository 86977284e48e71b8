"""The grounding check's dev set is usable and independent of the evaluation set.

`demo/grounding_dev.jsonl` chooses the grounding check's calibration and thresholds. It
must be grounded in the handbook like the evaluation set, cover every page, hold enough
near-miss unanswerable questions, and share nothing with the evaluation or training
questions: no opening three words, no 8-word run, no identical question.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from demo import build_dataset, facts
from loraplex.eval.overlap import overlaps, training_questions, words
from loraplex.eval.questions import load_questions
from tests.handbook_questions import (
    assert_contradictions_are_on_the_same_page,
    assert_gold_facts_are_on_their_pages,
)

DEMO = Path(__file__).resolve().parents[2] / "demo"
DEV = DEMO / "grounding_dev.jsonl"


@pytest.fixture(scope="module")
def questions():
    return load_questions(DEV)


@pytest.fixture(scope="module")
def docs():
    return build_dataset.load_handbook(DEMO / "handbook")


def test_size_and_mix(questions):
    kinds = Counter(q.kind for q in questions)
    assert len(questions) >= 120
    assert kinds["unanswerable"] >= 0.25 * len(questions)
    assert kinds["single"] >= 60 and kinds["multi"] >= 10
    assert set(kinds) <= {"single", "multi", "unanswerable"}
    assert len({q.id for q in questions}) == len(questions)


def test_every_handbook_page_is_asked_about(questions, docs):
    assert {q.document for q in questions if q.answerable} == set(docs)


def test_gold_facts_and_passages_come_from_the_handbook(questions, docs):
    assert_gold_facts_are_on_their_pages(questions, docs)


def test_contradictions_are_other_values_on_the_same_page(questions, docs):
    assert_contradictions_are_on_the_same_page(questions, docs)


def test_unanswerable_questions_name_the_page_they_nearly_hit(questions, docs):
    for q in questions:
        if q.kind != "unanswerable":
            continue
        near = [t.removeprefix("near:") for t in q.tags if t.startswith("near:")]
        assert near and all(page in docs for page in near), (q.id, q.tags)


def test_dev_questions_are_not_evaluation_or_training_questions(questions):
    """No shared opening three words, no shared 8-word run, no identical question."""
    evaluation = [q.question for q in load_questions(DEMO / "eval" / "questions.jsonl")]
    trained = training_questions(DEMO / "acme_train.jsonl") + [f[1] for f in facts.TRAIN]
    assert len(evaluation) >= 100 and len(trained) >= 100
    asked = [q.question for q in questions]
    clashes = []  # only the dev side is reported: the evaluation set stays unseen
    for name, others in (("evaluation", evaluation), ("training", trained)):
        clashes += [f"{name}: {o.question!r} {o.why}" for o in overlaps(asked, others)]
        seen = {tuple(words(text)) for text in others}
        clashes += [f"{name}: {t!r} is identical" for t in asked if tuple(words(t)) in seen]
    assert not clashes, "\n".join(clashes)
