"""Does the answer answer the question: sentence relevance and one calibrated score.

Support (`services.common.grounding.support`) proves that a passage holds a claim's
words; it says nothing about whether the claim answers what was asked. Relevance does:

* every sentence of the given passages is scored by the share of the question's key
  terms it holds, each term weighted by how rare it is among those sentences (a word
  every sentence shares tells nothing), then halved for each thing it lacks: a name or
  code the question names, a number when the question asks "how many/long/much/when",
  a name when it asks "who", and a place among the `TOP` best matching sentences;
* a claim's relevance is that of the sentences its facts come from: each of its numbers,
  codes and names is taken from the most relevant sentence of its cited passages that
  holds it, and the claim counts its least relevant fact (the neighbouring figure on the
  right page scores as the neighbouring sentence does); a claim without such facts
  takes the sentence holding most of its content words;
* an answer's raw score is the least relevance among its claims (0 when a claim has no
  supporting citation); `calibrate` maps it to the share of answers that were right at
  that raw score on the demo's training split (`demo/calibrate_grounding.py` fits the
  table; the evaluation questions are never used).

Lexical, no model: the inference service loads no embedder, and the measurements
(docs/grounding.md) decide whether one would pay for itself.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.common.grounding import (
    MIN_OVERLAP,
    Claim,
    Passage,
    question_terms,
    sentences,
    stem,
    stems_of,
    tokens,
)

#: A sentence outside the best `TOP` matches of the question is at most half relevant.
TOP = 3
_PENALTY = 0.5
_ASKS_NUMBER = re.compile(
    r"\b(?:how\s+(?:many|much|long|often|soon|far|old|quickly|fast|large|big|high|heavy|early|late)"
    r"|when|by\s+what|what\s+(?:time|date|day|year|age|percentage|share|value|amount|price|"
    r"limit|speed|size|number)|price|cost|deadline|number\s+of)\b",
    re.I,
)
_ASKS_PERSON = re.compile(r"\b(?:who|whom|whose)\b", re.I)
_ASKS_CODE = re.compile(r"\bcode\b", re.I)
#: "which bank", "what resolution", "how many parking spaces": the word naming what is asked.
_FOCUS = re.compile(r"\b(?:which|what|how\s+many|how\s+much)\s+((?:\w+\s+){0,2}?)(\w+)", re.I)
_PERSON = re.compile(r"\b[A-Z][a-z]+(?:[ -][A-Z][a-z]+)+\b")
_CODE_TOKEN = re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]+\b")
_STOPWORDS_OF_FOCUS = frozenset(
    re.split(
        r"\s+",
        "a an the is are was were do does did of to in on for our my your this that"
        " kind sort type i we you it",
    )
)
#: Words a question uses about any workplace rule: they select nothing.
_GENERIC = frozenset(
    stem(w) for w in re.split(r"\s+", "company policy rule allowed need staff employee")
)
#: Raw score -> share right on the training split (isotonic, `demo/calibrate_grounding.py`).
CALIBRATION: tuple[tuple[float, float], ...] = (
    (0.0, 0.0), (0.0301, 0.0125), (0.065, 0.05), (0.0949, 0.08), (0.1514, 0.2535),
    (0.2148, 0.2571), (0.3632, 0.5), (0.3861, 0.5385), (0.4422, 0.575), (0.5654, 0.6441),
    (0.8246, 0.8158), (1.0, 1.0),
)  # fmt: skip
#: The documented default threshold (chosen on the training split, docs/grounding.md).
DEFAULT_THRESHOLD = 0.65


@dataclass(frozen=True)
class Sentence:
    number: int  # the passage it is in
    text: str
    terms: frozenset[str]  # folded numbers, codes and names (`Passage.terms`)
    stems: frozenset[str]
    relevance: float


def _question_names(question: str) -> frozenset[str]:
    """Codes and mid-sentence capitalised words of the question, as `Passage.terms` folds them."""
    words = tokens(question)
    names = set()
    for i, word in enumerate(words):
        is_code = bool(re.search(r"\d", word)) and bool(re.search(r"[A-Za-z]", word))
        if is_code or (i > 0 and word[0].isupper() and word.lower() != "i"):
            names |= Passage(word).terms
    return frozenset(n for n in names if stem(n) not in _GENERIC)


class Relevance:
    """Every sentence of the passages scored against one question."""

    def __init__(self, question: str, passages: Mapping[int, str]) -> None:
        asked = question_terms(question) - _GENERIC
        found = [
            (number, text, Passage(text))
            for number, passage in passages.items()
            for text in sentences(passage)
            if not text.startswith("#")
        ]
        all_stems = [stems_of(text) for _, text, _ in found]
        weight = {t: math.log(1 + len(found) / (1 + sum(t in s for s in all_stems))) for t in asked}
        total = sum(weight.values())
        self.wants = _Wants.of(question)
        raw = []
        for (_, text, passage), held in zip(found, all_stems, strict=True):
            value = sum(weight[t] for t in asked & held) / total if total else 1.0
            if self.wants.names - passage.terms:
                value *= _PENALTY
            if self.wants.focus and self.wants.focus not in held:
                value *= _PENALTY
            if not self.wants.answered_by(text):
                value *= _PENALTY
            raw.append(value)
        ranked = sorted(raw, reverse=True)
        cut = ranked[TOP - 1] if len(ranked) >= TOP else 0.0
        self.sentences = [
            Sentence(n, text, passage.terms, held, v if v >= cut else v * _PENALTY)
            for (n, text, passage), held, v in zip(found, all_stems, raw, strict=True)
        ]

    def best(self) -> Sentence | None:
        """The most relevant sentence (ties: the earlier one)."""
        return max(self.sentences, key=lambda s: s.relevance, default=None)

    def of_claim(self, claim: Claim, numbers: Iterable[int]) -> float:
        """Relevance of the sentences of passages `numbers` that the claim's facts come from.

        The question's own names are not the answer's facts; a claim that does not state
        the kind of thing asked (a number, a person, a code) is at most half relevant.
        """
        cited = set(numbers)
        pool = [s for s in self.sentences if s.number in cited]
        if not pool or claim.empty:
            return 0.0
        penalty = 1.0 if self.wants.answered_by(claim.text) else _PENALTY
        facts = claim.required - self.wants.names
        if facts:
            least = 1.0
            for term in facts:
                holding = [s.relevance for s in pool if term in s.terms]
                least = min(least, max(holding, default=0.0))
            return least * penalty
        best = max(pool, key=lambda s: len(claim.content & s.stems))
        if len(claim.content & best.stems) < MIN_OVERLAP * len(claim.content):
            return 0.0
        return best.relevance * penalty


@dataclass(frozen=True)
class _Wants:
    """What kind of answer the question asks for, read from its wording."""

    names: frozenset[str]  # codes and names the question names: the answer must be about them
    focus: str  # stem of the word naming what is asked ("which bank"), or ""
    number: bool
    person: bool
    code: bool

    @classmethod
    def of(cls, question: str) -> _Wants:
        focus = ""
        if found := _FOCUS.search(question):
            words = [*found.group(1).split(), found.group(2)]
            content = [w for w in words if w.lower() not in _STOPWORDS_OF_FOCUS]
            focus = stem(content[-1]) if content else ""
        return cls(
            _question_names(question),
            focus if focus not in _GENERIC else "",
            bool(_ASKS_NUMBER.search(question)),
            bool(_ASKS_PERSON.search(question)),
            bool(_ASKS_CODE.search(question)),
        )

    def answered_by(self, text: str) -> bool:
        """Whether the text states the kind of thing asked (any text, when nothing is)."""
        terms = Passage(text).terms
        if self.number and not any(t[:1].isdigit() for t in terms):
            return False
        if self.person and not any(
            not (Passage(p).terms & self.names) for p in _PERSON.findall(text)
        ):
            return False
        return not (self.code and not _CODE_TOKEN.search(text))


def calibrate(raw: float) -> float:
    """The raw score as the share of answers right at it (linear between the table's knots)."""
    xs = [x for x, _ in CALIBRATION]
    i = bisect_right(xs, raw)
    if i == 0:
        return CALIBRATION[0][1]
    if i == len(xs):
        return CALIBRATION[-1][1]
    (x0, y0), (x1, y1) = CALIBRATION[i - 1], CALIBRATION[i]
    return round(y0 + (y1 - y0) * (raw - x0) / (x1 - x0), 4)
