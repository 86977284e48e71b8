"""Text normalisation and the per-answer tests the evaluation is built on.

Pure functions, no services. Decisions, pinned by tests/unit/eval/test_text.py:

* `normalize` turns text into a canonical token string so that surface differences
  that do not change the fact do not change the score: case, accents, punctuation,
  hyphens and spacing in codes ("TR-7" == "tr7" == "TR 7"), thousands separators
  ("1,200" == "1200"), leading zeros and trailing decimal zeros ("09:00" == "9:00",
  "4.50" == "4.5"), the euro sign ("€300" == "300 EUR" == "EUR 300" == "300 euros"),
  "%" == "percent", ordinal suffixes ("4th" == "4") and English number words from zero
  to ninety-nine ("fourteen days" == "14 days", "forty-five" == "45", "fourth" == "4";
  not "second", which is also a unit). Plurals, synonyms and units are not handled
  ("3 years" != "36 months"): a question file lists them as aliases.
* `answer_match` is normalized containment on token boundaries ("114 days" does not
  match "14 days"). It is a building block: `states_fact` adds the negation test.
* `states_fact` is `answer_match` where the occurrence is not negated: a "not", "no",
  "never" or "n't" within the three tokens before it ("not 30 days", "isn't 30 days")
  makes it not count, except in comparisons ("no later than 14 days").
* `hedged` spots an answer that does not commit ("I'm not sure, maybe 30 days").
* `is_refusal` spots an answer that declines ("I do not know", "The sources do not say").
* `style_match` is the house style: one sentence, at most 25 words, ending with one
  or more `[n]` citations ("Approval comes from the Regional Director. [1]"). The
  sentence must be finished (. ! or ?) before the citation; a new sentence starts at
  . ! or ? followed by a space and a capital or digit, except after a few common
  abbreviations (Dr., e.g., etc.), so "4.50 EUR", "YY.N" and "Dr. Arkwright" are fine.
  No line breaks. `refusal_style_match` is the house style of a decline: one short
  sentence that cites nothing (there is nothing to cite).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

MAX_STYLE_WORDS = 25

_UNITS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_ORDINALS = {
    "first": 1,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
}
_NUMBER_WORDS = {word: n for n, word in enumerate(_UNITS)} | _ORDINALS
# "second" is left out on purpose: it is also a unit ("1.8 metres per second").
_ORDINAL_SUFFIXES = {"st", "nd", "rd", "th"}

_NUMBER = r"\d+(?:[.,:]\d+)*"
_TOKEN = re.compile(r"\d+(?:[.:]\d+)*|[a-z]+")
_CITATION = re.compile(r"\[\d{1,3}\]")
_TRAILING_CITATIONS = re.compile(r"(?:\s*\[\d{1,3}\])+\s*$")
# A sentence ends at . ! or ? followed by whitespace and then a capital, digit or quote.
_SENTENCE_BREAK = re.compile(r"[.!?][\"')\]]*\s+(?=[A-Z0-9\"'(])")
_ABBREVIATION = re.compile(r"\b(?:dr|mr|mrs|ms|prof|st|no|vs|etc|approx|e\.g|i\.e)\.", re.I)
_PUNCT_TRANSLATION = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
)


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _canonical_number(token: str) -> str:
    if ":" in token:  # a time: 09:00 -> 9:00
        head, *rest = token.split(":")
        return ":".join([str(int(head)), *rest])
    if "." in token:  # a decimal (or a version): 4.50 -> 4.5, 2.0 -> 2
        head, _, tail = token.partition(".")
        if "." in tail:
            return ".".join(str(int(part)) for part in token.split("."))
        tail = tail.rstrip("0")
        return f"{int(head)}.{tail}" if tail else str(int(head))
    return str(int(token))


def _tokens(text: str) -> list[str]:
    text = _strip_accents(unicodedata.normalize("NFKC", text)).translate(_PUNCT_TRANSLATION)
    text = text.lower()
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,200 -> 1200
    text = re.sub(rf"€\s*({_NUMBER})", r" \1 eur ", text)  # €300 -> 300 eur
    text = re.sub(rf"\beur\s*({_NUMBER})", r" \1 eur ", text)  # EUR 300 -> 300 eur
    text = re.sub(r"\beuros?\b|€", " eur ", text)
    text = re.sub(r"\bper\s+cent\b|%", " percent ", text)
    out: list[str] = []
    after_tens = False  # the previous token was "twenty".."ninety"
    for token in _TOKEN.findall(text):
        was_tens, after_tens = after_tens, False
        if token[0].isdigit():
            out.append(_canonical_number(token))
        elif token in _ORDINAL_SUFFIXES and out and out[-1].isdigit():
            continue  # 4th -> 4
        elif token in _TENS:
            out.append(str(_TENS[token]))
            after_tens = True
        elif token in _NUMBER_WORDS:
            value = _NUMBER_WORDS[token]
            if was_tens and 0 < value < 10:  # forty-five / forty five -> 45
                out[-1] = str(int(out[-1]) + value)
            else:
                out.append(str(value))
        else:
            out.append(token)
    return out


def normalize(text: str) -> str:
    """Canonical, space-separated tokens of `text` (see the module docstring)."""
    return " ".join(_tokens(text))


def answer_match(prediction: str, answer: str, aliases: Iterable[str] = ()) -> bool:
    """True when the normalized answer or any alias is a whole-token run in the prediction."""
    haystack = f" {normalize(prediction)} "
    for candidate in (answer, *aliases):
        needle = normalize(candidate)
        if needle and f" {needle} " in haystack:
            return True
    return False


def strip_citations(text: str) -> str:
    return _CITATION.sub("", text)


def style_match(prediction: str) -> bool:
    """House style: one sentence, ≤ 25 words (citations not counted), ends with `[n]`."""
    text = prediction.strip()
    tail = _TRAILING_CITATIONS.search(text)
    if tail is None or "\n" in text:
        return False
    body = text[: tail.start()].strip()
    return not _CITATION.search(body) and _one_finished_sentence(body)


_NEGATORS = {"not", "no", "never", "t", "cannot", "nor", "neither"}  # "isn't" -> "isn", "t"
_COMPARATIVES = {"later", "more", "less", "fewer", "earlier", "longer", "sooner", "greater"}
_HEDGE = re.compile(
    r"\b(?:not sure|unsure|not certain|maybe|perhaps|possibly|probably|i think|i believe"
    r"|i guess|i assume|it seems|might be)\b"
)
_SUBJECT = r"(?:sources?|handbook|context|documents?|passages?|text|information|page|it|they)"
_REFUSAL = re.compile(
    "|".join(
        (
            r"\b(?:i|we)(?: really)? (?:do not|don'?t|did not|didn'?t|cannot|can'?t|can not"
            r"|am not able to|'?m not able to|am unable to|'?m unable to)"
            r" (?:know|find|answer|say|tell|determine|help|see|have)\b",
            rf"\b{_SUBJECT} (?:do|does|did)(?: not|n'?t) (?:say|mention|contain|state|specify"
            r"|include|cover|provide|give|have|tell|answer|hold)\b",
            r"\bthere (?:is|are) no (?:information|mention|answer|details?|data)\b",
            r"\bno (?:information|mention|details?) (?:about|on|of|regarding)\b",
            r"\bnot (?:mentioned|stated|specified|provided|given|found|available|covered)"
            r" in (?:the |any |these |this )?"
            r"(?:sources?|handbook|context|documents?|passages?|text)",
            r"\bunable to (?:answer|find|determine)\b",
            r"\bcannot (?:be )?(?:answered|determined)\b",
        )
    )
)


def states_fact(prediction: str, answer: str, aliases: Iterable[str] = ()) -> bool:
    """`answer_match`, but an occurrence right after a negation does not count.

    "Not 30 days", "it isn't 30 days" and "never 30 days" do not state "30 days"; a
    comparison ("no later than 14 days") does. The fact counts when any one occurrence
    of it (or an alias) is not negated.
    """
    tokens = _tokens(prediction)
    for candidate in (answer, *aliases):
        needle = _tokens(candidate)
        if not needle:
            continue
        size = len(needle)
        for i in range(len(tokens) - size + 1):
            if tokens[i : i + size] == needle and not _negated(tokens, i):
                return True
    return False


def _negated(tokens: list[str], at: int) -> bool:
    for k in range(max(0, at - 3), at):
        if tokens[k] in _NEGATORS and not (k + 1 < len(tokens) and tokens[k + 1] in _COMPARATIVES):
            return True
    return False


def _plain(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_PUNCT_TRANSLATION).lower()


def hedged(prediction: str) -> bool:
    """The answer does not commit: "I'm not sure", "maybe", "probably", "I think"."""
    return bool(_HEDGE.search(_plain(prediction)))


def is_refusal(prediction: str) -> bool:
    """The answer declines: "I do not know", "the sources do not say", "there is no mention"."""
    return bool(_REFUSAL.search(_plain(prediction)))


def word_count(prediction: str) -> int:
    return len(strip_citations(prediction).split())


def cited_markers(prediction: str) -> set[int]:
    return {int(m) for m in re.findall(r"\[(\d{1,3})\]", prediction)}


def _one_finished_sentence(body: str) -> bool:
    if not body or "\n" in body or not re.search(r"[.!?][\"')]*$", body):
        return False
    if _SENTENCE_BREAK.search(_ABBREVIATION.sub(lambda m: m.group(0)[:-1], body)):
        return False
    return len(body.split()) <= MAX_STYLE_WORDS


def refusal_style_match(prediction: str) -> bool:
    """House style of a decline: one finished sentence, ≤ 25 words, citing nothing."""
    text = prediction.strip()
    return not _CITATION.search(text) and _one_finished_sentence(text)


_SPLIT_SENTENCES = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|\n+")


def sentences(text: str) -> list[str]:
    """Sentences and lines of a passage, markdown heading and bullet marks removed."""
    out = []
    for piece in _SPLIT_SENTENCES.split(text):
        piece = re.sub(r"^\s*(?:#+|[-*])\s*", "", piece).strip()
        if piece:
            out.append(piece)
    return out
