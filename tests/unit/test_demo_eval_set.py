"""The demo's evaluation set means something: big enough, varied, grounded, unlike training.

The overlap guard reads the training file as it is now (and the facts the builder uses),
so a regenerated training set that starts to copy evaluation questions fails the build.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from demo import build_dataset, facts
from loraplex.eval.overlap import overlaps, training_questions
from loraplex.eval.questions import load_questions
from tests.handbook_questions import (
    assert_contradictions_are_on_the_same_page,
    assert_gold_facts_are_on_their_pages,
)

DEMO = Path(__file__).resolve().parents[2] / "demo"


@pytest.fixture(scope="module")
def questions():
    return load_questions(DEMO / "eval" / "questions.jsonl")


@pytest.fixture(scope="module")
def docs():
    return build_dataset.load_handbook(DEMO / "handbook")


def test_size_and_mix(questions):
    kinds = Counter(q.kind for q in questions)
    assert len(questions) >= 120
    assert kinds["unanswerable"] >= 0.2 * len(questions)
    assert kinds["multi"] >= 10 and kinds["single"] >= 60 and kinds["adversarial"] >= 12
    attacks = Counter(q.attack for q in questions if q.attack)
    assert set(attacks) == {"injection", "false_premise", "other_org"}
    assert min(attacks.values()) >= 4


def test_every_handbook_page_is_asked_about(questions, docs):
    assert {q.document for q in questions if q.answerable} == set(docs)


def test_gold_facts_and_passages_come_from_the_handbook(questions, docs):
    assert_gold_facts_are_on_their_pages(questions, docs)


def test_contradictions_are_other_values_on_the_same_page(questions, docs):
    assert_contradictions_are_on_the_same_page(questions, docs)


def test_questions_are_not_training_questions():
    """No shared opening three words, no shared 8-word run (case and punctuation ignored)."""
    trained = training_questions(DEMO / "acme_train.jsonl") + [f[1] for f in facts.TRAIN]
    assert len(trained) >= 100
    asked = [q.question for q in load_questions(DEMO / "eval" / "questions.jsonl")]
    found = overlaps(asked, trained)
    assert not found, "\n".join(f"{o.question!r} ~ {o.training!r}: {o.why}" for o in found)


def test_the_overlap_guard_catches_openings_and_8_grams():
    trained = ["How long is the probation period at Acme Robotics for new engineers?"]
    assert overlaps(["how long is a warranty?"], trained)[0].why == "opens with 'how long is'"
    copied = "So, the probation period at Acme Robotics for new engineers, please?"
    assert "shares" in overlaps([copied], trained)[0].why
    assert not overlaps(["Probation: how many months?"], trained)
