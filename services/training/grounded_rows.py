"""RAFT-style rows that teach grounded answering: cite the passage, or decline.

From question/answer records (with the passages that hold each answer) this builds
chat rows laid out exactly like the inference service's RAG prompt
(`services.common.grounding.context_block`):

- answered rows in several phrasings, the answer passages among distractors at
  varying positions, the target the answer sentence ending with their numbers
  (`... [2]`, or `... [1][3]` when the answer needs two passages);
- distractor-heavy rows: the answer among `Recipe.heavy_sources` passages;
- decline rows: the question with passages that do not hold the answer, the target
  exactly `DECLINE` ("The sources do not say."), citing nothing.

The demo's data builder and the training service (dataset format `grounded_qa`) both
use it. Pure and seeded: the same records and seed give the same rows.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidArgument
from services.common.grounding import DECLINE, context_block, holds_answer

_TRAILING_MARKERS = re.compile(r"(?:\s*\[\d{1,3}\])+\s*$")
MAX_PASSAGES = 2  # an answer needs one passage, or two together
DEFAULT_TITLE = "Document"


@dataclass(frozen=True)
class Passage:
    title: str
    text: str


@dataclass(frozen=True)
class GroundedRecord:
    """A question, its one-sentence answer and the passages that together hold it."""

    question: str
    answer: str  # without citation markers
    passages: tuple[Passage, ...]
    paraphrases: tuple[str, ...] = ()
    distractors: tuple[Passage, ...] = ()  # the record's own near misses, if any
    key: str = ""  # the short fact, to vet distractors ("Regional Director"); default: answer

    @property
    def phrasings(self) -> tuple[str, ...]:
        return (self.question, *self.paraphrases)


@dataclass(frozen=True)
class Recipe:
    """How many rows of each kind a record yields."""

    sources: tuple[int, ...] = (2, 3, 3, 4)  # passages per prompt, drawn from this list
    heavy_sources: int = 5  # passages in a distractor-heavy row
    heavy_share: float = 0.25  # share of answered rows that are distractor-heavy
    answered: int = 2  # answered rows per record, each in the next phrasing
    decline_share: float = 0.35  # chance that a record also yields a decline row
    decline_sources: tuple[int, ...] = (2, 3)


#: Draws one distractor for a record; may return a passage that holds the answer
#: (it is vetted and drawn again).
Draw = Callable[[random.Random, GroundedRecord], Passage]
#: Whether a passage holds the record's answer.
Holds = Callable[[GroundedRecord, Passage], bool]


def default_holds(record: GroundedRecord, passage: Passage) -> bool:
    if record.key:
        return record.key.casefold() in passage.text.casefold()
    return holds_answer(record.answer, passage.text)


def _row(sources: Sequence[Passage], question: str, target: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": context_block([(p.title, p.text) for p in sources])},
            {"role": "user", "content": question},
            {"role": "assistant", "content": target},
        ]
    }


def _distractors(
    record: GroundedRecord, count: int, rng: random.Random, draw: Draw, holds: Holds
) -> list[Passage]:
    chosen: list[Passage] = []
    for _ in range(count * 50):
        if len(chosen) == count:
            break
        passage = draw(rng, record)
        if holds(record, passage) or passage in chosen or passage in record.passages:
            continue
        chosen.append(passage)
    return chosen


def answered_row(
    record: GroundedRecord,
    question: str,
    count: int,
    rng: random.Random,
    draw: Draw,
    holds: Holds = default_holds,
) -> dict[str, Any]:
    """The answer passages among distractors at random positions; cites their numbers."""
    count = max(count, len(record.passages))
    sources = _distractors(record, count - len(record.passages), rng, draw, holds)
    for passage in record.passages:
        sources.insert(rng.randint(0, len(sources)), passage)
    numbers = sorted(sources.index(p) + 1 for p in record.passages)
    return _row(sources, question, record.answer + " " + "".join(f"[{n}]" for n in numbers))


def decline_row(
    record: GroundedRecord,
    question: str,
    count: int,
    rng: random.Random,
    draw: Draw,
    holds: Holds = default_holds,
) -> dict[str, Any] | None:
    """Only passages that do not hold the answer; the target is the fixed decline."""
    sources = _distractors(record, count, rng, draw, holds)
    return _row(sources, question, DECLINE) if sources else None


def build_rows(
    records: Sequence[GroundedRecord],
    rng: random.Random,
    draw: Draw,
    holds: Holds = default_holds,
    recipe: Recipe = Recipe(),
) -> list[dict[str, Any]]:
    """Every record's answered and decline rows, shuffled."""
    rows: list[dict[str, Any]] = []
    for record in records:
        phrasings = record.phrasings
        first = rng.randrange(len(phrasings))
        for i in range(recipe.answered):
            question = phrasings[(first + i) % len(phrasings)]
            heavy = rng.random() < recipe.heavy_share
            count = recipe.heavy_sources if heavy else rng.choice(recipe.sources)
            rows.append(answered_row(record, question, count, rng, draw, holds))
        if rng.random() < recipe.decline_share:
            question = phrasings[(first + recipe.answered) % len(phrasings)]
            row = decline_row(
                record, question, rng.choice(recipe.decline_sources), rng, draw, holds
            )
            if row:
                rows.append(row)
    rng.shuffle(rows)
    return rows


# -- tenants' datasets: format `grounded_qa` ------------------------------------------------


@dataclass
class _Pool:
    """Distractors for tenant records: their own near misses, else other records' passages."""

    records: Sequence[GroundedRecord]
    everything: list[Passage] = field(init=False)

    def __post_init__(self) -> None:
        seen: dict[Passage, None] = {}
        for record in self.records:
            seen.update(dict.fromkeys((*record.passages, *record.distractors)))
        self.everything = list(seen)

    def __call__(self, rng: random.Random, record: GroundedRecord) -> Passage:
        if record.distractors and rng.random() < 0.5:
            return rng.choice(record.distractors)
        return rng.choice(self.everything)


def _passage(value: Any, where: str) -> Passage:
    if isinstance(value, str) and value.strip():
        return Passage(DEFAULT_TITLE, value.strip())
    if isinstance(value, dict) and isinstance(value.get("text"), str) and value["text"].strip():
        title = value.get("title", DEFAULT_TITLE)
        if not isinstance(title, str):
            raise InvalidArgument(f"{where}: a passage's 'title' must be a string")
        return Passage(title.strip() or DEFAULT_TITLE, value["text"].strip())
    raise InvalidArgument(f"{where}: a passage is a non-empty string or {{'title', 'text'}}")


def _strings(row: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = row.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidArgument(f"{where}: '{key}' must be a list of non-empty strings")
    return tuple(v.strip() for v in value)


def record_from_row(row: Any, line: int) -> GroundedRecord:
    """Parses one `grounded_qa` row; INVALID_ARGUMENT names the line and what to fix.

    {"question": str, "answer": str, "passages": [str | {"title", "text"}] (1 or 2,
    together holding the answer), "paraphrases": [str], "distractors": [...], "key": str}
    """
    where = f"line {line}"
    if not isinstance(row, dict):
        raise InvalidArgument(f"{where}: each row must be a JSON object")
    for key in ("question", "answer"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise InvalidArgument(f"{where}: '{key}' must be a non-empty string")
    answer = _TRAILING_MARKERS.sub("", row["answer"]).strip()
    if not answer or answer == DECLINE:
        raise InvalidArgument(f"{where}: 'answer' must state the answer (declines are generated)")
    passages = row.get("passages")
    if not isinstance(passages, list) or not 1 <= len(passages) <= MAX_PASSAGES:
        raise InvalidArgument(
            f"{where}: 'passages' must list the 1 or {MAX_PASSAGES} passages that hold the answer"
        )
    distractors = row.get("distractors", [])
    if not isinstance(distractors, list):
        raise InvalidArgument(f"{where}: 'distractors' must be a list of passages")
    key = row.get("key", "")
    if not isinstance(key, str):
        raise InvalidArgument(f"{where}: 'key' must be a string")
    return GroundedRecord(
        question=row["question"].strip(),
        answer=answer,
        passages=tuple(_passage(p, where) for p in passages),
        paraphrases=_strings(row, "paraphrases", where),
        distractors=tuple(_passage(p, where) for p in distractors),
        key=key.strip(),
    )


def expand(rows: Sequence[dict[str, Any]], seed: int, pool: Sequence[dict[str, Any]] = ()) -> list:
    """`grounded_qa` rows to chat rows; distractors come from `pool` (default: `rows`)."""
    records = [record_from_row(row, i) for i, row in enumerate(rows, start=1)]
    others = [record_from_row(row, i) for i, row in enumerate(pool, start=1)] or records
    if not records:
        return []
    if len(_Pool(others).everything) < 2:
        raise InvalidArgument(
            "grounded_qa needs passages from at least two records (or 'distractors') to draw"
            " distractors from"
        )
    return build_rows(records, random.Random(seed), _Pool(others))


def is_grounded_record(row: Any) -> bool:
    return isinstance(row, dict) and "question" in row and "messages" not in row
