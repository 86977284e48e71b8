"""Guards an evaluation set against its training set: no shared openings, no shared 8-grams.

A question that begins like a training question, or shares any run of eight words with
one, measures recall of the training template rather than answering. Text is compared
after lower-casing and dropping punctuation. `training_questions` reads the training
file as it is now, so the guard keeps working when the training set is regenerated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

OPENING_WORDS = 3
NGRAM = 8


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower().replace("'", ""))


def training_questions(path: Path | str) -> list[str]:
    """The user turns of a training JSONL (`messages`), or its question-like fields.

    Reads `messages` rows (every user turn), `grounded_qa` rows (`question` and
    `paraphrases`) and `instruction`/`prompt`/`input` rows.
    """
    out: list[str] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for message in row.get("messages", []):
            if message.get("role") == "user":
                out.append(message.get("content", ""))
        for key in ("question", "instruction", "prompt", "input"):
            if isinstance(row.get(key), str):
                out.append(row[key])
        out += [p for p in row.get("paraphrases", []) if isinstance(p, str)]
    return out


@dataclass(frozen=True)
class Overlap:
    question: str
    training: str
    why: str


def overlaps(questions: Iterable[str], trained: Iterable[str]) -> list[Overlap]:
    """Every evaluation question that opens like, or shares an 8-gram with, a training one."""
    openings: dict[tuple[str, ...], str] = {}
    grams: dict[tuple[str, ...], str] = {}
    for text in trained:
        w = words(text)
        if len(w) >= OPENING_WORDS:
            openings.setdefault(tuple(w[:OPENING_WORDS]), text)
        for i in range(len(w) - NGRAM + 1):
            grams.setdefault(tuple(w[i : i + NGRAM]), text)
    found = []
    for question in questions:
        w = words(question)
        opening = tuple(w[:OPENING_WORDS])
        if len(w) >= OPENING_WORDS and opening in openings:
            found.append(Overlap(question, openings[opening], f"opens with {' '.join(opening)!r}"))
            continue
        for i in range(len(w) - NGRAM + 1):
            gram = tuple(w[i : i + NGRAM])
            if gram in grams:
                found.append(Overlap(question, grams[gram], f"shares {' '.join(gram)!r}"))
                break
    return found
