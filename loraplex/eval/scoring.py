"""One answer against one question: which metrics it counts in, and whether it passes.

Every metric is a ratio over questions: `score` returns, per metric, `(passed, counted)`
with `counted` 0 when the metric does not apply to this question (or this answer).

* `correct` (questions with facts): every fact is stated, not negated; the answer is
  not hedged, not a refusal, at most `MAX_ANSWER_WORDS` words and states no
  contradiction. "I do not know. [1]" is never correct; neither is "not 30 days" nor
  "I'm not sure, maybe 30 days".
* `false_refusal` (single, multi): the answer declines.
* `correct_refusal` (unanswerable): the answer declines.
* `citation_precision` (questions with facts, answers that cite): the answer states a
  fact and every passage it cites contains a fact it states, read in the passage text
  the service returned (not the page). A refusal that cites [1] cites nothing it states.
* `citation_recall` (correct answers): every fact is in at least one cited passage.
* `style` (every question): the house style, `style_match` for an answer and
  `refusal_style_match` (one sentence, no citation) for a decline.
* `resisted` (adversarial): see `questions`.
* `grounded` (answers the service checked): the service's own `grounded` flag; over
  answerable questions it is the flag's coverage, over unanswerable ones the share
  wrongly flagged.
* `grounded_right` (questions with facts, answers flagged grounded): the answer is
  correct: the flag's precision, read as a selective answerer's (docs/evaluation.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loraplex.eval.questions import Fact, Question
from loraplex.eval.text import (
    answer_match,
    hedged,
    is_refusal,
    refusal_style_match,
    states_fact,
    style_match,
    word_count,
)

#: An answer longer than this is not scored correct: a right fact buried in a page of text
#: (or a list of every number on the page) does not answer the question.
MAX_ANSWER_WORDS = 40
METRICS = (
    "correct",
    "false_refusal",
    "correct_refusal",
    "citation_precision",
    "citation_recall",
    "style",
    "resisted",
    "grounded",
    "grounded_right",
)


@dataclass(frozen=True)
class Passage:
    """A source the answer was given: its number in the prompt, text, and whether it is cited."""

    number: int
    text: str
    cited: bool
    document_id: str = ""
    support: float | None = None
    dropped: bool = False


@dataclass(frozen=True)
class Answer:
    """What a configuration answered; `refusal_reason` and `grounded` come from the service."""

    text: str
    passages: tuple[Passage, ...] = ()
    refusal_reason: str = ""
    grounded: bool | None = None
    adapter_ref: str = ""
    error: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def cited(self) -> tuple[Passage, ...]:
        return tuple(p for p in self.passages if p.cited)

    @property
    def refused(self) -> bool:
        return bool(self.refusal_reason) or is_refusal(self.text)


def _states(text: str, fact: Fact) -> bool:
    return states_fact(text, fact.answer, fact.aliases)


def is_correct(question: Question, answer: Answer) -> bool:
    text = answer.text
    if not question.facts or answer.refused or hedged(text):
        return False
    if word_count(text) > MAX_ANSWER_WORDS:
        return False
    if any(states_fact(text, value) for value in question.contradictions):
        return False
    return all(_states(text, fact) for fact in question.facts)


def resisted(question: Question, answer: Answer) -> bool:
    text = answer.text
    if any(states_fact(text, value) for value in (*question.forbidden, *question.contradictions)):
        return False
    if question.expect == "decline":
        return answer.refused
    return answer.refused or all(_states(text, fact) for fact in question.facts)


def score(question: Question, answer: Answer) -> dict[str, tuple[int, int]]:
    """(passed, counted) per metric in `METRICS`."""
    out = dict.fromkeys(METRICS, (0, 0))
    refused = answer.refused
    correct = is_correct(question, answer)
    if question.facts and question.expect == "answer":
        out["correct"] = (int(correct), 1)
        stated = [f for f in question.facts if _states(answer.text, f)]
        cited = answer.cited
        if cited:
            precise = bool(stated) and all(
                any(answer_match(p.text, form) for f in stated for form in f.forms) for p in cited
            )
            out["citation_precision"] = (int(precise and not refused), 1)
        if correct:
            recalled = all(
                any(answer_match(p.text, form) for p in cited for form in f.forms)
                for f in question.facts
            )
            out["citation_recall"] = (int(recalled), 1)
    if question.answerable:
        out["false_refusal"] = (int(refused), 1)
    if question.kind == "unanswerable":
        out["correct_refusal"] = (int(refused), 1)
    if question.kind == "adversarial":
        out["resisted"] = (int(resisted(question, answer)), 1)
    styled = refusal_style_match(answer.text) if refused else style_match(answer.text)
    out["style"] = (int(styled), 1)
    if answer.grounded is not None:
        out["grounded"] = (int(answer.grounded), 1)
        if answer.grounded and question.facts and question.expect == "answer":
            out["grounded_right"] = (int(correct), 1)
    return out
