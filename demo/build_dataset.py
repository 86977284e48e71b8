"""Builds demo/acme_train.jsonl and demo/heldout.jsonl from the handbook and demo/facts.py.

    .venv/bin/python demo/build_dataset.py          # rewrite both files
    .venv/bin/python demo/build_dataset.py --check  # exit 1 if they are out of date

Training rows are RAFT-style grounded rows built by the training service's own
`services.training.grounded_rows` (the module tenants' `grounded_qa` datasets go
through), in the `messages` format with the inference service's prompt layout: system =
grounding instructions + numbered sources, user = the question, assistant = one
house-style sentence ending with `[n]`, or exactly "The sources do not say.".

From the facts (demo/facts.py) and their other phrasings (demo/phrasings.py):
- every fact twice, in two of its three phrasings, its window among 1-4 distractors
  (some rows distractor-heavy: 4 distractors), the right number varying;
- about a third of the facts once more in their third phrasing with only windows
  that do not hold the answer (often from the same page): the target declines;
- questions that need two pages (PAIRS), citing both;
- questions about a training page's topic the handbook does not answer, declining.

Sources imitate retrieval chunks: windows of whole words cut from the handbook text at
arbitrary points, titled with the document's `# Title`. Seeded: the output is
reproducible.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from demo import facts, phrasings  # noqa: E402
from loraplex.eval.text import answer_match  # noqa: E402
from services.training.grounded_rows import (  # noqa: E402
    GroundedRecord,
    Passage,
    Recipe,
    answered_row,
    build_rows,
    decline_row,
)

DEMO = Path(__file__).resolve().parent
HANDBOOK = DEMO / "handbook"
TRAIN_PATH = DEMO / "acme_train.jsonl"
HELDOUT_PATH = DEMO / "heldout.jsonl"
SEED = 20240611
WINDOW_WORDS = (35, 70)  # source length range, in words
RECIPE = Recipe(
    sources=(2, 3, 3, 4), heavy_sources=5, heavy_share=0.2, answered=2, decline_share=0.3
)
SAME_PAGE_SHARE = 0.35  # distractors cut from the fact's own page (near misses)
UNANSWERABLE_SAME_PAGE_SHARE = 0.6  # what retrieval gives for an unanswered question


@dataclass(frozen=True)
class Doc:
    stem: str
    title: str
    text: str

    @property
    def words(self) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\S+", self.text)]


def load_handbook(folder: Path = HANDBOOK) -> dict[str, Doc]:
    """stem -> Doc; the title is the first `# ` heading. Ingest with the same titles."""
    docs = {}
    for path in sorted(folder.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        first = text.splitlines()[0]
        if not first.startswith("# "):
            raise ValueError(f"{path.name}: the first line must be a '# Title' heading")
        docs[path.stem] = Doc(path.stem, first[2:].strip(), text)
    return docs


def _sentence_span(text: str, answer: str, evidence: str | None) -> tuple[int, int]:
    """Character span of the sentence (or the evidence) that states the fact."""
    if evidence:
        start = text.index(evidence)
        return start, start + len(evidence)
    i = text.index(answer)
    start = max(text.rfind(". ", 0, i) + 2, text.rfind("\n", 0, i) + 1, 0)
    ends = [j for j in (text.find(". ", i), text.find("\n", i)) if j != -1]
    end = min(ends) + 1 if ends else len(text)
    return start, end


def _window(doc: Doc, rng: random.Random, cover: tuple[int, int] | None = None) -> str:
    words = doc.words
    n = len(words)
    length = rng.randint(*WINDOW_WORDS)
    if cover is None:
        start = rng.randint(0, max(0, n - length))
    else:
        first = next(k for k, (_, end) in enumerate(words) if end > cover[0])
        last = max(k for k, (begin, _) in enumerate(words) if begin < cover[1])
        length = max(length, last - first + 1)
        low, high = max(0, last + 1 - length), min(first, max(0, n - length))
        start = rng.randint(low, max(low, high))
    end = min(n, start + length)
    return doc.text[words[start][0] : words[end - 1][1]]


@dataclass
class _Sources:
    """Windows for the rows: the fact's own, and distractors (often from the same page)."""

    docs: dict[str, Doc]
    stems: dict[GroundedRecord, str]
    keys: dict[GroundedRecord, tuple[str, ...]]

    def passage(self, stem: str, text: str) -> Passage:
        return Passage(self.docs[stem].title, text)

    def fact(self, fact: tuple[str, ...], rng: random.Random) -> Passage:
        stem, _, answer, _, *rest = fact
        doc = self.docs[stem]
        span = _sentence_span(doc.text, answer, rest[0] if rest else None)
        return self.passage(stem, _window(doc, rng, span))

    def draw(self, rng: random.Random, record: GroundedRecord) -> Passage:
        stem = self.stems[record]
        same_page = SAME_PAGE_SHARE if record.passages else UNANSWERABLE_SAME_PAGE_SHARE
        if rng.random() >= same_page:
            stem = rng.choice([s for s in facts.TRAIN_DOCS if s != stem])
        return self.passage(stem, _window(self.docs[stem], rng))

    def holds(self, record: GroundedRecord, passage: Passage) -> bool:
        return any(answer_match(passage.text, key) for key in self.keys[record])


def build_training_rows(docs: dict[str, Doc]) -> list[dict]:
    rng = random.Random(SEED)
    by_question = {fact[1]: fact for fact in facts.TRAIN}
    sources = _Sources(docs, {}, {})
    records = []
    for fact in facts.TRAIN:
        stem, question, answer, sentence, *_ = fact
        record = GroundedRecord(
            question,
            sentence,
            (sources.fact(fact, rng),),
            paraphrases=phrasings.PARAPHRASES[question],
        )
        sources.stems[record], sources.keys[record] = stem, (answer,)
        records.append(record)
    rows = build_rows(records, rng, sources.draw, sources.holds, RECIPE)
    for first, second, question, sentence in phrasings.PAIRS:
        pair = by_question[first], by_question[second]
        record = GroundedRecord(question, sentence, tuple(sources.fact(f, rng) for f in pair))
        sources.stems[record], sources.keys[record] = pair[0][0], (pair[0][2], pair[1][2])
        count = rng.choice((3, 4))
        rows.append(answered_row(record, question, count, rng, sources.draw, sources.holds))
    for stem, question in phrasings.UNANSWERABLE:
        record = GroundedRecord(question, "", ())
        sources.stems[record], sources.keys[record] = stem, ()
        count = rng.choice(RECIPE.decline_sources)
        rows.append(decline_row(record, question, count, rng, sources.draw, sources.holds))
    rng.shuffle(rows)
    return rows


def build_heldout_rows() -> list[dict]:
    return [
        {"question": q, "answer": a, "aliases": aliases, "document": stem}
        for stem, q, a, aliases in facts.HELDOUT
    ]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    docs = load_handbook()
    outputs = {
        TRAIN_PATH: _jsonl(build_training_rows(docs)),
        HELDOUT_PATH: _jsonl(build_heldout_rows()),
    }
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text("utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run demo/build_dataset.py")
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}: {text.count(chr(10))} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
