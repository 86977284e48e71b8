"""Builds demo/acme_train.jsonl and demo/heldout.jsonl from the handbook and demo/facts.py.

    .venv/bin/python demo/build_dataset.py          # rewrite both files
    .venv/bin/python demo/build_dataset.py --check  # exit 1 if they are out of date

Training rows use the `messages` format with a system turn, built with the inference
service's own `context_block`, so the adapter sees at training exactly the chat the
inference service renders at serving time: system = grounding instructions + numbered
sources, user = the bare question, assistant = one house-style sentence + `[n]`.

Sources imitate retrieval chunks: windows of whole words cut from the handbook text at
arbitrary points (serving chunks are token windows, not sentences), titled with the
document's `# Title`. One window holds the fact; the others are distractors from other
training documents or from elsewhere in the same document, never containing the answer.
The right source's number varies. Everything is seeded: the output is reproducible.
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

from demo import facts  # noqa: E402
from loraplex.eval.text import answer_match  # noqa: E402
from loraplex.retrieval.v1 import retrieval_service_pb2 as ret_pb  # noqa: E402
from services.inference.rag import Source, context_block  # noqa: E402

DEMO = Path(__file__).resolve().parent
HANDBOOK = DEMO / "handbook"
TRAIN_PATH = DEMO / "acme_train.jsonl"
HELDOUT_PATH = DEMO / "heldout.jsonl"
SEED = 20240611
WINDOW_WORDS = (40, 80)  # source length range, in words
SOURCE_COUNTS = (2, 3, 3, 4)  # sources per prompt, drawn uniformly from this list
SECOND_VARIANT_SHARE = 0.5  # facts that get a second row (other distractors, position)


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


def _distractors(
    docs: dict[str, Doc], stem: str, answer: str, count: int, rng: random.Random
) -> list[tuple[Doc, str]]:
    others = [docs[s] for s in facts.TRAIN_DOCS if s != stem]
    chosen: list[tuple[Doc, str]] = []
    while len(chosen) < count:
        doc = docs[stem] if not chosen and rng.random() < 0.3 else rng.choice(others)
        text = _window(doc, rng)
        if answer_match(text, answer) or any(text == t for _, t in chosen):
            continue
        chosen.append((doc, text))
    return chosen


def _chunk(doc: Doc, text: str) -> ret_pb.ScoredChunk:
    return ret_pb.ScoredChunk(
        document_id=doc.stem, text=text, source=ret_pb.Source(title=doc.title)
    )


def training_row(docs: dict[str, Doc], fact: tuple[str, ...], rng: random.Random) -> dict:
    stem, question, answer, sentence, *rest = fact
    doc = docs[stem]
    right = _window(doc, rng, _sentence_span(doc.text, answer, rest[0] if rest else None))
    count = rng.choice(SOURCE_COUNTS)
    pool = _distractors(docs, stem, answer, count - 1, rng)
    position = rng.randrange(count)
    pool.insert(position, (doc, right))
    sources = [Source(i + 1, _chunk(d, t)) for i, (d, t) in enumerate(pool)]
    return {
        "messages": [
            {"role": "system", "content": context_block(sources)},
            {"role": "user", "content": question},
            {"role": "assistant", "content": f"{sentence} [{position + 1}]"},
        ]
    }


def build_training_rows(docs: dict[str, Doc]) -> list[dict]:
    rng = random.Random(SEED)
    rows = [training_row(docs, fact, rng) for fact in facts.TRAIN]
    seconds = rng.sample(facts.TRAIN, round(len(facts.TRAIN) * SECOND_VARIANT_SHARE))
    rows += [training_row(docs, fact, rng) for fact in seconds]
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
