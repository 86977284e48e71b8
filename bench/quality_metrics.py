"""Scoring for the held-out quality comparison (base, base+RAG, adapter, adapter+RAG).

Pure functions, no services. Decisions, pinned by tests/unit/test_quality_metrics.py:

* `normalize` turns text into a canonical token string so that surface differences
  that do not change the fact do not change the score: case, accents, punctuation,
  hyphens and spacing in codes ("TR-7" == "tr7" == "TR 7"), thousands separators
  ("1,200" == "1200"), leading zeros and trailing decimal zeros ("09:00" == "9:00",
  "4.50" == "4.5"), the euro sign ("€300" == "300 EUR" == "EUR 300" == "300 euros"),
  "%" == "percent", ordinal suffixes ("4th" == "4") and English number words from zero
  to ninety-nine ("fourteen days" == "14 days", "forty-five" == "45", "fourth" == "4";
  not "second", which is also a unit).
  It does not handle plurals, synonyms or units ("Mondays" != "Monday",
  "3 years" != "36 months"): those are listed as aliases in the held-out file.
* `answer_match` is normalized containment on token boundaries: the answer (or an
  alias) must appear as a contiguous run of whole tokens in the prediction. A
  one-sentence answer that states the fact in other words around it still counts;
  "114 days" does not match "14 days". Containment cannot see negation ("not 45 days"
  matches "45 days"); the house style's short answers make that rare.
* `style_match` is the house style: one sentence, at most 25 words, ending with one
  or more `[n]` citations ("Approval comes from the Regional Director. [1]"). The
  sentence must be finished (. ! or ?) before the citation; a new sentence starts at
  . ! or ? followed by a space and a capital or digit, except after a few common
  abbreviations (Dr., e.g., etc.), so "4.50 EUR", "YY.N" and "Dr. Arkwright" are fine.
  No line breaks.
* `citation_correct` is true when at least one cited source comes from the expected
  document (ids compared by file stem, so "02-travel", "02-travel.md" and
  "demo/handbook/02-travel.md" are the same document).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

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
    if not text or "\n" in text:
        return False
    tail = _TRAILING_CITATIONS.search(text)
    if tail is None:
        return False
    body = text[: tail.start()].strip()
    if not body or _CITATION.search(body):
        return False
    if not re.search(r"[.!?][\"')]*$", body):  # the sentence itself is finished
        return False
    if _SENTENCE_BREAK.search(_ABBREVIATION.sub(lambda m: m.group(0)[:-1], body)):
        return False
    return len(body.split()) <= MAX_STYLE_WORDS


def document_stem(document_id: str) -> str:
    """'demo/handbook/02-travel.md' -> '02-travel'."""
    name = PurePosixPath(document_id.replace("\\", "/")).name
    return name[:-3] if name.lower().endswith(".md") else name


def citation_correct(cited_document_ids: Iterable[str], expected_document: str) -> bool:
    """True when at least one cited source belongs to the expected document."""
    expected = document_stem(expected_document)
    return any(document_stem(doc) == expected for doc in cited_document_ids)


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-configuration scores, in order of first appearance.

    Each row: ``config`` (e.g. "adapter+rag"), ``prediction``, ``answer``, optional
    ``aliases``, ``document`` (expected handbook stem), ``rag`` (bool, default False),
    ``cited_documents`` (document ids of the sources the answer cites) and, optionally,
    ``retrieved_documents`` (ids of all sources given to the model).

    Returns ``{config: {"n", "accuracy", "style_rate", "citation_accuracy",
    "retrieval_recall"}}``; rates are fractions in [0, 1]. Citation accuracy and retrieval
    recall are computed over RAG rows only and are None for a configuration without RAG
    rows (nothing to cite) or, for recall, without ``retrieved_documents``.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["config"]), []).append(row)
    summary: dict[str, dict[str, Any]] = {}
    for config, items in groups.items():
        n = len(items)
        correct = sum(
            answer_match(r["prediction"], r["answer"], r.get("aliases") or ()) for r in items
        )
        styled = sum(style_match(r["prediction"]) for r in items)
        rag_rows = [r for r in items if r.get("rag")]
        cited = [citation_correct(r.get("cited_documents") or (), r["document"]) for r in rag_rows]
        with_retrieval = [r for r in rag_rows if "retrieved_documents" in r]
        hits = [citation_correct(r["retrieved_documents"], r["document"]) for r in with_retrieval]
        summary[config] = {
            "n": n,
            "accuracy": correct / n,
            "style_rate": styled / n,
            "citation_accuracy": sum(cited) / len(cited) if cited else None,
            "retrieval_recall": sum(hits) / len(hits) if hits else None,
        }
    return summary


def markdown_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """The summary as a Markdown table (percentages; "n/a" where not applicable)."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    lines = [
        "| configuration | n | answer accuracy | house style | citation accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    for config, s in summary.items():
        lines.append(
            f"| {config} | {s['n']} | {pct(s['accuracy'])} | {pct(s['style_rate'])}"
            f" | {pct(s['citation_accuracy'])} |"
        )
    return "\n".join(lines) + "\n"


__all__: Sequence[str] = (
    "MAX_STYLE_WORDS",
    "answer_match",
    "citation_correct",
    "document_stem",
    "markdown_table",
    "normalize",
    "strip_citations",
    "style_match",
    "summarize",
)
