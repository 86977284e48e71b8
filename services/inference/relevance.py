"""Does the answer answer the question: sentence relevance and one calibrated score.

Support (`services.common.grounding.support`) proves that a passage holds a claim's
words; it says nothing about whether the claim answers what was asked. Relevance does:

* every sentence of the given passages is scored by the share of the question's key
  terms it holds, each term weighted by how rare it is among those sentences (a word
  every sentence shares tells nothing), averaged with the cosine of question and
  sentence under the retrieval embedder when one is given (`similarity`), then halved
  for each thing it lacks: a name or code the question names (also typed in lower
  case), the word naming what is asked ("which bank"), a number when the question asks
  "how many/long/much/when" and one of the kind asked (money for a price, a duration
  for "how long", a time of day for "opening hours"), a person other than the one the
  question names when it asks "who", a code when it asks for one, and a place among
  the `TOP` best matching sentences;
* a claim's relevance is that of the sentences its facts come from: each of its numbers,
  codes and names is taken from the most relevant sentence of its cited passages that
  holds it, and the claim counts its least relevant fact (the neighbouring figure on the
  right page scores as the neighbouring sentence does); a claim without such facts
  takes the sentence holding most of its content words;
* an answer's raw score is the least relevance among its claims (0 when a claim has no
  supporting citation); `calibrate` maps it to the share of answers that were right at
  that raw score on the demo's training split and its grounding dev set
  (`demo/calibrate_grounding.py` fits the table; the evaluation questions are never used).

Without an embedder the score is lexical only; the measurements (docs/grounding.md)
are of the embedder's version, which the service loads by default.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.common.grounding import (
    MIN_OVERLAP,
    Claim,
    Passage,
    claim,
    proper_nouns,
    question_terms,
    sentences,
    stem,
    stems_of,
    terms_of,
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
#: The kind of quantity asked (answer types, as QA question taxonomies split NUM): the
#: answer must state a number of that kind, not just any number ("price of X" is not
#: answered by "64 GB", "how long" not by "every Thursday").
_ASKS_MONEY = re.compile(
    r"\b(?:price|prices|priced|cost|costs|fee|fees|surcharge|salary|premium|stipend|subsidy"
    r"|deposit|day\s+rate|daily\s+rate|hourly\s+rate|paid\s+(?:per|a|each)|get\s+paid"
    r"|how\s+much\s+(?:do|does|did|is|are|will|would|can|could|money)|euros?|eur)\b",
    re.I,
)
_ASKS_PERCENT = re.compile(r"%|\b(?:percent|percentage)\b", re.I)
_TIME_UNIT = r"(?:seconds?|minutes?|mins?|hours?|hrs?|h|days?|weeks?|wks?|months?|years?|yrs?)"
_ASKS_DURATION = re.compile(
    rf"\b(?:how\s+long|duration|how\s+many\s+(?:working\s+)?{_TIME_UNIT}|within\s+how)\b",
    re.I,
)
_ASKS_CLOCK = re.compile(
    r"\b(?:what\s+time|at\s+what\s+hour|(?:opening|support|office|core|staffed)\s+hours"
    r"|hours\s+(?:is|are)\s+\w+\s+(?:open|staffed))\b",
    re.I,
)
_MONEY = re.compile(
    r"[€$£]\s?\d|\b(?:EUR|USD|GBP)\s?\d"
    r"|\d[\d,.]*\s?(?:k\s)?(?:EUR|euros?|USD|dollars?|GBP|pounds?|€)\b",
    re.I,
)
_PERCENT = re.compile(r"\d\s?%|\b\w+\s+percent\b", re.I)
_DURATION = re.compile(
    r"(?:\b\d[\d,.]*[\s-]*|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
    r"|fifteen|twenty|thirty|forty|fifty|sixty|ninety|a|an)[\s-]+)"
    rf"(?:(?:working|calendar|business|consecutive|full)[\s-]+)?{_TIME_UNIT}\b",
    re.I,
)
_CLOCK = re.compile(r"\b\d{1,2}[:.]\d{2}\b|\b\d{1,2}\s?(?:am|pm)\b|\b(?:noon|midnight)\b", re.I)
_QUANTITIES = {"money": _MONEY, "percent": _PERCENT, "duration": _DURATION, "clock": _CLOCK}
_ASKS_PERSON = re.compile(r"\b(?:who|whom|whose)\b", re.I)
_ASKS_CODE = re.compile(r"\bcode\b", re.I)
#: "X vs Y?", "who is it, and who does she report to?": two things asked at once.
_ASKS_TWO = re.compile(
    r"\b(?:vs|versus)\b|,\s*and\b|\b(?:and|or)\s+(?:who|what|which|when|how|where)\b", re.I
)
#: "which bank", "what resolution", "how many parking spaces": the word naming what is asked.
_FOCUS = re.compile(r"\b(?:which|what|how\s+many|how\s+much)\s+((?:\w+\s+){0,2}?)(\w+)", re.I)
_PERSON = re.compile(r"\b[A-Z][a-z]+(?:[ -][A-Z][a-z]+)+\b")
_CODE_TOKEN = re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]+\b")
_STOPWORDS_OF_FOCUS = frozenset(
    re.split(
        r"\s+",
        "a an the is are was were do does did of to in on for our my your this that"
        " kind sort type i we you it they he she can could should would will may might must"
        " shall has have had get gets",
    )
)
#: Words a question uses about any workplace rule: they select nothing.
_GENERIC = frozenset(
    stem(w) for w in re.split(r"\s+", "company policy rule allowed need staff employee vs versus")
)
#: Raw score -> share right on the training split and dev set (isotonic; fitted by
#: demo/calibrate_grounding.py).
CALIBRATION: tuple[tuple[float, float], ...] = (
    (0.0, 0.0), (0.0348, 0.0), (0.1111, 0.0405), (0.1402, 0.0928), (0.1652, 0.1724),
    (0.321, 0.225), (0.3692, 0.2581), (0.3952, 0.3077), (0.414, 0.4545), (0.4591, 0.5),
    (0.5444, 0.6829), (0.6246, 0.8667), (0.9006, 1.0), (1.0, 1.0),
)  # fmt: skip
#: The documented default threshold (chosen on the training split and dev set, docs/grounding.md).
DEFAULT_THRESHOLD = 0.7
#: Below this score REFUSE and QUOTE do not serve an answer (chosen on the same two sets).
DEFAULT_ABSTAIN_THRESHOLD = 0.2


class Similarity(Protocol):
    def cosines(self, question: str, sentences: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class Sentence:
    number: int  # the passage it is in
    text: str
    terms: frozenset[str]  # folded numbers, codes and names (`Passage.terms`)
    stems: frozenset[str]
    relevance: float
    whole: str = ""  # the sentence as scored: joined across a chunk boundary where cut
    numbers: tuple[int, ...] = ()  # the passages `whole` spans


_FINISHED = re.compile(r"[.!?][\"')\]]*$")


def _stitched(found: list[tuple[int, str, Passage]]) -> dict[int, tuple[str, tuple[int, ...]]]:
    """Sentences a chunk boundary cut in two, joined where the chunks overlap: the unfinished
    last sentence of one passage and the first of another that starts mid-sentence with the
    same words ("... 180 EUR per night in standard" + "standard cities and 240 EUR ...")."""
    firsts: dict[int, int] = {}
    lasts: dict[int, int] = {}
    for i, (number, _, _) in enumerate(found):
        firsts.setdefault(number, i)
        lasts[number] = i
    out: dict[int, tuple[str, tuple[int, ...]]] = {}
    for a, i in lasts.items():
        head = found[i][1]
        if _FINISHED.search(head):
            continue
        for b, j in firsts.items():
            tail = found[j][1]
            if a == b or not tail[:1].islower():
                continue
            left, right = head.split(), tail.split()
            overlap = next(
                (k for k in range(min(len(left), len(right), 40), 0, -1) if left[-k:] == right[:k]),
                0,
            )
            if overlap:
                whole = " ".join([*left, *right[overlap:]])
                out[i] = out[j] = (whole, (a, b))
                break
    return out


def _question_names(question: str, known: frozenset[str]) -> frozenset[str]:
    """Codes and mid-sentence capitalised words of the question, as `Passage.terms` folds them,
    and words the passages only ever write as names (`known`), however the question writes
    them: people type "lisvale canteen" for the Lisvale canteen."""
    words = tokens(question)
    names = set()
    for i, word in enumerate(words):
        is_code = bool(re.search(r"\d", word)) and bool(re.search(r"[A-Za-z]", word))
        folded = Passage(word).terms
        if is_code or (i > 0 and word[0].isupper() and word.lower() != "i") or folded & known:
            names |= folded
    return frozenset(n for n in names if stem(n) not in _GENERIC)


def _names_only(texts: Sequence[str]) -> frozenset[str]:
    """Folded words the texts capitalise mid-sentence and never write in lower case."""
    lower = {
        t for text in texts for word in tokens(text) if word[:1].islower() for t in terms_of(word)
    }
    return frozenset(
        n for n in proper_nouns(texts) - lower if len(n) > 2 and stem(n) not in _GENERIC
    )


class Relevance:
    """Every sentence of the passages scored against one question."""

    def __init__(
        self, question: str, passages: Mapping[int, str], similarity: Similarity | None = None
    ) -> None:
        asked = question_terms(question) - _GENERIC
        found = [
            (number, text, Passage(text))
            for number, passage in passages.items()
            for text in sentences(passage)
            if not text.startswith("#")
        ]
        joined = _stitched(found)
        read = [joined.get(i, (text, (n,)))[0] for i, (n, text, _) in enumerate(found)]
        all_stems = [stems_of(text) for text in read]
        weight = {t: math.log(1 + len(found) / (1 + sum(t in s for s in all_stems))) for t in asked}
        total = sum(weight.values())
        self.wants = _Wants.of(question, _names_only([text for _, text, _ in found]))
        cosines = [0.0] * len(found)
        if similarity is not None and asked and found:
            cosines = similarity.cosines(question, read)
        raw = []
        for text, held, cosine in zip(read, all_stems, cosines, strict=True):
            value = sum(weight[t] for t in asked & held) / total if total else 1.0
            if similarity is not None and asked:
                value = (value + max(cosine, 0.0)) / 2
            if self.wants.names and not self.wants.names & Passage(text).terms:
                value *= _PENALTY
            if self.wants.focus and self.wants.focus not in held:
                value *= _PENALTY
            if not self.wants.answered_by(text):
                value *= _PENALTY
            raw.append(value)
        ranked = sorted(raw, reverse=True)
        cut = ranked[TOP - 1] if len(ranked) >= TOP else 0.0
        self.sentences = [
            Sentence(
                n, text, passage.terms, stems_of(text), v if v >= cut else v * _PENALTY,
                *joined.get(i, (text, (n,))),
            )
            for i, ((n, text, passage), v) in enumerate(zip(found, raw, strict=True))
        ]  # fmt: skip

    def best(self) -> Sentence | None:
        """The most relevant sentence (ties: the earlier one)."""
        return max(self.sentences, key=lambda s: s.relevance, default=None)

    def of_claim(self, claim: Claim, numbers: Iterable[int]) -> float:
        """Relevance of the sentences of passages `numbers` that the claim's facts come from
        (the question's own names are not the answer's facts)."""
        cited = set(numbers)
        pool = [s for s in self.sentences if s.number in cited]
        if not pool or claim.empty:
            return 0.0
        facts = claim.required - self.wants.names
        if facts:
            least = 1.0
            for term in facts:
                holding = [s.relevance for s in pool if term in s.terms]
                least = min(least, max(holding, default=0.0))
            return least
        best = max(pool, key=lambda s: len(claim.content & s.stems))
        if len(claim.content & best.stems) < MIN_OVERLAP * len(claim.content):
            return 0.0
        return best.relevance

    def of_answer(self, claims: Sequence[tuple[Claim, Iterable[int]]]) -> float:
        """The least relevance of the claims (each with the passages it cites), halved when
        the answer does not state the kind of thing asked (a number, a person, a code, two
        facts for two questions); 0 for no claim."""
        if not claims:
            return 0.0
        least = min(self.of_claim(claim, numbers) for claim, numbers in claims)
        said = " ".join(claim.text for claim, _ in claims)
        return least if self.wants.answered_by(said) else least * _PENALTY


@dataclass(frozen=True)
class _Wants:
    """What kind of answer the question asks for, read from its wording."""

    names: frozenset[str]  # codes and names the question names: the answer must be about them
    focus: str  # stem of the word naming what is asked ("which bank"), or ""
    number: bool
    person: bool
    code: bool
    two: bool  # two things asked: the answer must state at least two facts
    asked: frozenset[str] = frozenset()  # stems of the question's content words
    quantities: frozenset[str] = frozenset()  # kinds of number that answer (`_QUANTITIES`)
    words: frozenset[str] = frozenset()  # the question's words, folded

    @classmethod
    def of(cls, question: str, names: frozenset[str]) -> _Wants:
        """`names`: the corpus's proper nouns, so "lisvale" counts as the name "Lisvale"."""
        focus = ""
        if found := _FOCUS.search(question):
            words = [*found.group(1).split(), found.group(2)]
            content = [w for w in words if w.lower() not in _STOPWORDS_OF_FOCUS]
            focus = stem(content[-1]) if content else ""
        quantities = set()
        if _ASKS_PERCENT.search(question):
            quantities.add("percent")
        elif _ASKS_MONEY.search(question):
            quantities |= {"money", "percent"}
        if _ASKS_DURATION.search(question):
            quantities.add("duration")
        if _ASKS_CLOCK.search(question):
            quantities.add("clock")
        return cls(
            _question_names(question, names),
            focus if focus not in _GENERIC else "",
            bool(_ASKS_NUMBER.search(question)) or bool(quantities),
            bool(_ASKS_PERSON.search(question)),
            bool(_ASKS_CODE.search(question)),
            bool(_ASKS_TWO.search(question)),
            question_terms(question),
            frozenset(quantities),
            terms_of(question.lower()),
        )

    def answered_by(self, text: str) -> bool:
        """Whether the text states the kind of thing asked (any text, when nothing is)."""
        terms = Passage(text).terms
        if self.number and not any(t[:1].isdigit() for t in terms):
            return False
        if self.quantities and not any(_QUANTITIES[q].search(text) for q in self.quantities):
            return False
        if self.person and not any(
            not (terms_of(p.lower()) & self.words) for p in _PERSON.findall(text)
        ):
            return False
        facts = [r for r in claim(text).required if stem(r) not in self.asked]
        if self.two and len(facts) < 2:
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
