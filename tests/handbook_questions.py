"""Checks every set of questions about the demo handbook must pass (evaluation, dev)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from demo.build_dataset import Doc
from loraplex.eval.questions import Question
from loraplex.eval.text import answer_match


def assert_gold_facts_are_on_their_pages(questions: Sequence[Question], docs: Mapping[str, Doc]):
    """Each fact is on its question's page, each passage piece is page text and holds the
    facts; a question without facts names no page or passage."""
    for q in questions:
        if not q.facts:
            assert not q.document and not q.passage, q.id
            continue
        text = docs[q.document].text
        for fact in q.facts:
            assert answer_match(text, fact.answer), (q.id, fact.answer)
        for piece in q.passage.split(" … "):
            assert piece and piece in text, (q.id, piece)
        for fact in q.facts:
            assert any(answer_match(q.passage, form) for form in fact.forms), (q.id, fact)


def assert_contradictions_are_on_the_same_page(
    questions: Sequence[Question], docs: Mapping[str, Doc]
):
    """A contradiction is another value the page states, not a form of the answer."""
    for q in questions:
        for value in q.contradictions:
            assert answer_match(docs[q.document].text, value), (q.id, value)
            assert not any(answer_match(value, f) for fact in q.facts for f in fact.forms), q.id
