"""Grounded answering, shared by training and inference: prompt layout and support scores.

Training renders its rows with the same `context_block` the inference service puts in
the prompt, and declines with the same fixed `DECLINE` sentence the service returns
when it abstains, so a model learns exactly what it is served and judged by.

`support` says how well one passage backs one claim (an answer sentence), without a
model: every number, code and proper name of the claim must appear in the passage,
enough of its content words must too, and a negation in one but not the other fails.
Pure text functions; nothing here imports a model or gRPC.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache

GROUNDING_INSTRUCTIONS = (
    "Answer using only the numbered sources below. Cite the sources you use as [1], [2]."
    " If the sources do not contain the answer, reply exactly: The sources do not say."
)
#: The one decline sentence: taught in training, returned by the service when it abstains.
DECLINE = "The sources do not say."
#: Share of a claim's content words a passage must hold (besides every number and name).
MIN_OVERLAP = 0.6

_STOPWORDS = frozenset(
    re.split(
        r"\s+",
        "a an the and or but nor so yet of to in on at by for from with within without into "
        "onto over under about above below after before between through during per via than then "
        "as is are was were be been being am do does did done doing have has had having will would "
        "shall should can could may might must need needs it its it's this that these those there "
        "here their theirs they them you your yours we our ours us i me my he she his her him who "
        "whom whose which what when where why how all any each every both few more most other some "
        "such only own same too very just also not no never none yes if up out off again once "
        "further least less many much one ones get gets got make makes made use used using "
        "sure okay ok please answer source sources according think believe probably maybe perhaps "
        "possibly likely around approximately usually typically generally",
    )
)
_NEGATIONS = frozenset({"not", "no", "never", "none", "cannot", "nobody", "nothing", "neither"})
_NEGATION_SCOPE = 3  # content words after a negation that it negates
_UNITS = re.split(
    r"\s+",
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    " fifteen sixteen seventeen eighteen nineteen twenty",
)
_NUMBER_WORDS = {w: str(n) for n, w in enumerate(_UNITS)} | {
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "sixty": "60",
    "ninety": "90",
}
_TENS = frozenset({"twenty", "thirty", "forty", "fifty", "sixty", "ninety"})
_WEAK_NUMBER_WORDS = frozenset({"zero", "one"})  # too common to be a claim's fact
_TOKEN = re.compile(r"\d+(?:[.,:]\d+)*(?:st|nd|rd|th)?%?|[^\W\d_][\w'\u2019-]*")
_MARKER = re.compile(r"\[\d{1,3}\]")
#: Template text in square brackets ("[Company name]"): a small model's unfilled slot.
_PLACEHOLDER = re.compile(r"\[[^\]\d][^\]]*\]")
_YES_NO = frozenset({"yes", "no"})
_CODE = re.compile(r"(?=.*\d)(?=.*[A-Za-z])|^[A-Z]{2,}[-.]|[A-Z][a-z]*[A-Z]|-[A-Z]")
_ABBREVIATIONS = ("Dr", "Mr", "Mrs", "Ms", "Prof", "St", "No", "vs", "etc", "approx", "e.g", "i.e")
_SENTENCE_END = re.compile(
    "".join(rf"(?<!\b{re.escape(a)}\.)" for a in _ABBREVIATIONS)
    + r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(#*-])|\n+"
)
_REFUSAL = re.compile(
    r"\b(?:do(?:es)?\s*n[o']?t|did\s*n[o']?t|cannot|can't|could\s*n[o']?t|unable\s+to)\s+"
    r"(?:know|say|find|tell|answer|determine|specify|mention|contain|provide|state|cover|"
    r"include)\b"
    r"|\bno\s+(?:information|mention|answer|details?|data|record)\b"
    r"|\bnot\s+(?:mentioned|specified|stated|covered|provided|given|available|included|sure)\b"
    r"|\bno\s+idea\b|\bnot\s+in\s+the\s+(?:sources|handbook|documents?|passages?)\b",
    re.I,
)
_NUMBER_IN_TEXT = re.compile(r"\d")


def format_source(number: int, title: str, text: str) -> str:
    """One numbered source line, as the prompt shows it: `[n] (Title) text`."""
    return f"[{number}] ({title}) {text.strip()}\n"


def context_block(sources: Sequence[tuple[str, str]]) -> str:
    """Instructions plus `(title, text)` sources numbered from 1 in the order given."""
    body = "".join(format_source(i, title, text) for i, (title, text) in enumerate(sources, 1))
    return f"{GROUNDING_INSTRUCTIONS}\n\nSources:\n{body}"


@lru_cache(maxsize=1 << 16)  # the check folds the same handbook words millions of times
def _fold(token: str) -> str:
    """Lower case, no accents, no punctuation, no possessive or plural s."""
    text = unicodedata.normalize("NFKD", token)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"['\u2019]s$", "", text)
    text = re.sub(r"[^a-z0-9]", "", text)
    if len(text) > 3 and text.endswith("s") and not text.endswith("ss") and not text[-2].isdigit():
        text = text[:-1]
    return text


@lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    """Crude but symmetric: no -ing/-ed ending, then the first six letters ("approval" ~
    "approved" ~ "approves", "book" ~ "booked")."""
    text = _fold(word)
    if len(text) > 5 and text.endswith("ing"):
        text = text[:-3]
    elif len(text) > 4 and text.endswith("ed"):
        text = text[:-2]
    return text[:6]


def _number(token: str) -> str:
    """Canonical digits: 2,500 -> 2500, 09:30 -> 9:30, 4.50 -> 4.5, 20th -> 20, 12% -> 12."""
    token = re.sub(r"(?:st|nd|rd|th)?%?$", "", token.lower()).replace(",", "")
    if ":" in token:
        head, *rest = token.split(":")
        return ":".join([str(int(head)), *rest])
    if token.count(".") == 1:
        head, tail = token.split(".")
        tail = tail.rstrip("0")
        return f"{int(head)}.{tail}" if tail else str(int(head))
    return token.lstrip("0") or "0"


def _is_negation(low: str) -> bool:
    return low in _NEGATIONS or low.endswith("n't")


def _negated(words: Sequence[str]) -> frozenset[str]:
    """Stems of the first few content words after each negation ("not refreshed every
    36 months" negates refreshed and 36); an opening "No," answers, it does not negate."""
    found: set[str] = set()
    for i, word in enumerate(words):
        low = word.lower()
        if not _is_negation(low) or (i == 0 and low == "no"):
            continue
        scope = [w for w in words[i + 1 :] if w.lower() not in _STOPWORDS][:_NEGATION_SCOPE]
        found.update(_stem(w) for w in scope)
    return frozenset(found)


def _is_number(token: str) -> bool:
    return token[0].isdigit()


def _number_word(token: str) -> str | None:
    """Digits for "fourteen" or "thirty-six", None for other words."""
    low = token.lower()
    if low in _NUMBER_WORDS:
        return _NUMBER_WORDS[low]
    tens, _, unit = low.partition("-")
    if tens in _TENS and unit in _NUMBER_WORDS and int(_NUMBER_WORDS[unit]) < 10:
        return str(int(_NUMBER_WORDS[tens]) + int(_NUMBER_WORDS[unit]))
    return None


def _is_code(token: str) -> bool:
    return bool(_CODE.search(token)) and not _is_number(token)


def sentences(text: str) -> list[str]:
    """Sentences (and lines) of a text, stripped, empty ones left out."""
    return list(_sentences(text))


@lru_cache(maxsize=1 << 12)  # the splitter's look-behinds are slow; passages recur
def _sentences(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in _SENTENCE_END.split(text) if s.strip())


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def stem(word: str) -> str:
    """The stem `claim` and `question_terms` compare words by."""
    return _stem(word)


@lru_cache(maxsize=1 << 13)  # passage sentences recur across answers and thresholds
def stems_of(text: str) -> frozenset[str]:
    """Stems of a text's words and of their hyphenated parts ("TR-7" also gives "tr")."""
    words = tokens(text)
    return frozenset(_stem(w) for w in words) | {
        _stem(p) for w in words for p in re.split(r"[-.]", w) if p
    }


@dataclass(frozen=True)
class Claim:
    """What a sentence asserts: facts that must appear verbatim, and its content words."""

    text: str
    required: frozenset[str]  # folded numbers, codes and names
    content: frozenset[str]  # stems of content words (names included)
    negated: frozenset[str]  # stems of the content words a negation governs
    anchored: frozenset[str] = frozenset()  # content stems the question asked about
    says_nothing: bool = False  # an unfilled template, or only the question's own words

    @property
    def empty(self) -> bool:
        return not self.required and not self.content


def question_terms(question: str) -> frozenset[str]:
    """Stems of a question's content words: what the answer must be about."""
    return frozenset(
        _stem(w) for w in tokens(question) if w.lower() not in _STOPWORDS and len(_fold(w)) > 1
    )


def claim(
    text: str, proper_nouns: Iterable[str] = (), asked: frozenset[str] = frozenset()
) -> Claim:
    """The terms of one answer sentence.

    Content words the claim shares with the question (`asked`, from `question_terms`)
    are anchored: a passage must hold at least half of them, so an answer about "the
    award" is not backed by a passage about the CEO that never mentions one.

    A capitalised word is a name unless it only opens the sentence; an opening word
    is a name too when it looks like one (a code, two capitalised words in a row) or
    when the sources use it as one mid-sentence (`proper_nouns`, folded). So an
    invented one-word name that opens the sentence is only an ordinary content word:
    without a dictionary it cannot be told from "Staff" or "Laptops".

    A claim says nothing when it holds a template slot ("[Company name]") or when every
    content word, number and name in it comes from the question (a yes/no answer aside):
    a passage that repeats the question's words cannot back an answer that adds none.
    """
    known = set(proper_nouns)
    words = tokens(_MARKER.sub(" ", text))
    required: set[str] = set()
    content: set[str] = set()
    for i, word in enumerate(words):
        low = word.lower()
        if _is_negation(low):
            continue
        if _is_number(word):
            required.add(_number(word))
            continue
        if (digits := _number_word(word)) is not None:
            if low not in _WEAK_NUMBER_WORDS:
                required.add(digits)
            continue
        if _is_code(word):
            required.add(_fold(word))
            content.add(_stem(word))
            continue
        if low in _STOPWORDS or len(_fold(word)) < 2:
            continue
        content.add(_stem(word))
        if word[0].isupper() and word != "I":
            follows_name = i + 1 < len(words) and words[i + 1][0].isupper()
            if i > 0 or follows_name or _fold(word) in known:
                required.add(_fold(word))
    echoes = (
        bool(asked)
        and bool(content or required)
        and not (content - asked)
        and all(_stem(r) in asked for r in required)
        and not (words and words[0].lower() in _YES_NO)
    )
    return Claim(
        text,
        frozenset(required),
        frozenset(content),
        _negated(words),
        frozenset(content) & asked,
        says_nothing=echoes or bool(_PLACEHOLDER.search(text)),
    )


def proper_nouns(passages: Iterable[str]) -> frozenset[str]:
    """Folded words the passages capitalise mid-sentence: this corpus's names."""
    found = set()
    for passage in passages:
        for sentence in sentences(passage):
            words = tokens(sentence)
            found.update(
                _fold(w) for w in words[1:] if w[0].isupper() and w.lower() not in _STOPWORDS
            )
    return frozenset(found)


@lru_cache(maxsize=1 << 13)  # the same sentences are read for many answers
def terms_of(text: str) -> frozenset[str]:
    """Folded words, canonical numbers and acronyms of a text, as claims' facts are matched."""
    found: set[str] = set()
    for word in tokens(text):
        if _is_number(word):
            found.add(_number(word))
        elif (digits := _number_word(word)) is not None:
            found.add(digits)
        else:
            found.add(_fold(word))
            # "TR-7" also answers for "TR", "Varga-Lund" for "Varga" and "Lund"
            found.update(_fold(part) for part in re.split(r"[-.]", word) if part)
    return frozenset(found) | _acronyms(text)


@dataclass(frozen=True)
class Passage:
    """A passage's terms, computed once and matched against many claims."""

    text: str

    @cached_property
    def _sentences(self) -> list[tuple[frozenset[str], frozenset[str]]]:
        out = []
        for sentence in sentences(self.text):
            words = tokens(sentence)
            out.append((frozenset(_stem(w) for w in words), _negated(words)))
        return out

    @cached_property
    def terms(self) -> frozenset[str]:
        return terms_of(self.text)

    @cached_property
    def stems(self) -> frozenset[str]:
        return stems_of(self.text)

    def negation_differs(self, claim: Claim) -> bool:
        """Whether the passage sentence closest to the claim negates what the claim states,
        or states what the claim negates; a negation about other words does not count."""
        if not self._sentences or not claim.content:
            return False
        stems, negated = max(self._sentences, key=lambda s: len(claim.content & s[0]))
        return bool((claim.negated & stems) - negated or (negated & claim.content) - claim.negated)


def _acronyms(text: str) -> frozenset[str]:
    """Initials of runs of capitalised words: "Chief Financial Officer" answers for "CFO"."""
    found = set()
    for run in re.findall(r"\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+){1,4}\b", text):
        words = run.split()
        found.update("".join(w[0] for w in words[i:]).lower() for i in range(len(words) - 1))
    return frozenset(found)


@dataclass(frozen=True)
class Support:
    """How far passages back a claim: `score` in [0, 1], `missing` required terms."""

    score: float
    overlap: float
    missing: frozenset[str]
    negation: bool  # the closest passage sentence says the opposite
    off_topic: bool = False  # the passage lacks most of what the question asked about

    @property
    def supported(self) -> bool:
        return (
            not self.missing
            and not self.negation
            and not self.off_topic
            and self.overlap >= MIN_OVERLAP
        )


def support(claim: Claim, passages: Sequence[Passage]) -> Support:
    """Support of `claim` by the passages together (one, or the two a claim needs)."""
    if claim.empty or claim.says_nothing or not passages:  # nothing a passage could back
        return Support(0.0, 0.0, claim.required, False)
    terms = frozenset().union(*(p.terms for p in passages))
    stems = frozenset().union(*(p.stems for p in passages))
    missing = claim.required - terms
    off_topic = 2 * len(claim.anchored - stems) > len(claim.anchored)
    held = claim.content & stems
    overlap = len(held) / len(claim.content) if claim.content else 0.0  # "It is 10." says nothing
    total = len(claim.required) + len(claim.content)
    score = (len(claim.required) - len(missing) + len(held)) / total
    negation = all(p.negation_differs(claim) for p in passages)
    if negation:
        score /= 2
    return Support(round(score, 4), overlap, missing, negation, off_topic)


def is_refusal(text: str) -> bool:
    """A decline: says the sources do not answer, and states no number or code itself."""
    if not _REFUSAL.search(text):
        return False
    return not _NUMBER_IN_TEXT.search(_MARKER.sub("", text))


def holds_answer(answer: str, passage: str) -> bool:
    """Whether `passage` states the facts of `answer` (used to vet distractors)."""
    sentence = claim(answer, proper_nouns([passage]))
    if sentence.required:
        return sentence.required <= Passage(passage).terms
    return support(sentence, [Passage(passage)]).supported
