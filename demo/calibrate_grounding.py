"""Fits the grounding score's calibration and default thresholds on two sets.

* **Training split**: the rows of `acme_train.jsonl` hold a question, the numbered
  passages the model is shown (retrieval-like windows, distractors included) and the
  answer, or the decline where the passages do not hold it.
* **Dev set**: `grounding_dev.jsonl`, questions typed the way people ask, a third of them
  near misses the handbook does not answer (`grounding_dev.md`), each given the passages
  the demo's retrieval returns (the handbook chunked and embedded as `make demo` ingests
  it, dense top `TOP_K`) and judged as `loraplex eval` judges an answer.

Every one of the `TOP` most relevant passage sentences of a row is taken as a candidate
answer ("<sentence> [n]", the shape of a served answer and of a QUOTE) and labelled right
when it states the row's answer; on a declining row no candidate is right. The check
gives each candidate its raw score (`services.inference.relevance`), and isotonic
regression (pool adjacent violators) maps raw scores to the share right: the table.

Relevance uses the retrieval embedder (`services.inference.similarity`), as the
service does by default; `--lexical` fits the table for a service without it.

The default threshold is the lowest calibrated score at which, on each set, the quote
each row would get (its most relevant sentence) is right at least `PRECISION` of the
time among those flagged and at most `UNANSWERABLE` of the declining rows are flagged.
The default abstain threshold (below it REFUSE and QUOTE serve nothing) is the highest
at which at least `SERVED` of each set's answerable rows still get their quote. The
evaluation questions (demo/eval/questions.jsonl) are never read here.

    .venv/bin/python demo/calibrate_grounding.py            # print the table and threshold
    .venv/bin/python demo/calibrate_grounding.py --check    # fail if relevance.py is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loraplex.eval.questions import load_questions
from loraplex.eval.scoring import Answer, is_correct
from services.common.grounding import DECLINE, holds_answer
from services.inference import relevance
from services.inference.grounding import check_answer, quote
from services.inference.similarity import SentenceSimilarity

ROWS = Path(__file__).resolve().parent / "acme_train.jsonl"
DEV = Path(__file__).resolve().parent / "grounding_dev.jsonl"
HANDBOOK = Path(__file__).resolve().parent / "handbook"
PRECISION = 0.9
UNANSWERABLE = 0.05
SERVED = 0.85
KNOTS = 12  # calibration table size
#: How the demo retrieves for a dev question: its chunking (`make demo`) and top-k.
CHUNK_TOKENS, OVERLAP_TOKENS, TOP_K = 96, 16, 3
_SOURCE = re.compile(r"^\[(\d+)\] \([^)]*\) ", re.M)
_MARKERS = re.compile(r"\s*\[\d+\]")


@dataclass(frozen=True)
class Row:
    """A question, the numbered passages retrieval gives it, and how to judge an answer."""

    split: str  # "train" or "dev"
    question: str
    passages: dict[int, str]
    right: Callable[[str], bool] | None  # None: the passages do not hold the answer

    def judge(self, text: str) -> bool:
        return self.right is not None and self.right(_MARKERS.sub("", text))


def training_rows() -> list[Row]:
    """Every row of the training split: its own passages, right when it states the answer."""
    out = []
    for line in ROWS.read_text("utf-8").splitlines():
        messages = json.loads(line)["messages"]
        body = messages[0]["content"].split("Sources:\n", 1)[1]
        parts = _SOURCE.split(body)
        passages = {int(parts[i]): parts[i + 1].strip() for i in range(1, len(parts), 2)}
        answer = messages[-1]["content"]
        right = None if answer == DECLINE else partial(holds_answer, _MARKERS.sub("", answer))
        out.append(Row("train", messages[-2]["content"], passages, right))
    return out


def dev_rows() -> list[Row]:
    """Every dev question with the passages the demo's retrieval gives it (the handbook cut
    and embedded as `make demo` ingests it, dense top-k), judged as `loraplex eval` judges."""
    from services.common.model_packages import packaged_model_dir
    from services.retrieval.chunking import chunk_text
    from services.retrieval.embedder import Embedder

    embedder = Embedder("all-MiniLM-L6-v2", packaged_model_dir())
    chunks = [
        chunk.text
        for page in sorted(HANDBOOK.glob("*.md"))
        for chunk in chunk_text(
            page.read_text("utf-8"), embedder.token_offsets, CHUNK_TOKENS, OVERLAP_TOKENS
        )
    ]
    matrix = embedder.encode(chunks)  # unit vectors: inner product is cosine
    questions = load_questions(DEV)
    asked = embedder.encode_query([q.question for q in questions])
    out = []
    for question, vector in zip(questions, asked, strict=True):
        top = np.argsort(-(matrix @ vector), kind="stable")[:TOP_K]
        passages = {i + 1: chunks[j] for i, j in enumerate(top)}
        right = partial(_correct, question) if question.answerable else None
        out.append(Row("dev", question.question, passages, right))
    return out


def _correct(question, text: str) -> bool:
    return is_correct(question, Answer(text))


def candidates(data: list[Row], similarity) -> list[tuple[float, bool]]:
    """(raw score, right) for each of the TOP most relevant sentences of every row."""
    found = []
    for row in data:
        ranked = sorted(
            relevance.Relevance(row.question, row.passages, similarity).sentences,
            key=lambda s: -s.relevance,
        )
        for sentence in ranked[: relevance.TOP]:
            text = f"{sentence.text} [{sentence.number}]"
            raw = check_answer(text, row.passages, question=row.question, similarity=similarity).raw
            found.append((raw, row.judge(sentence.text)))
    return found


def isotonic(points: list[tuple[float, bool]]) -> list[tuple[float, float]]:
    """Pool adjacent violators: non-decreasing share right over raw score, as knots."""
    blocks: list[list[float]] = []  # [sum right, count, min raw, max raw]
    for raw, right in sorted(points):
        blocks.append([float(right), 1.0, raw, raw])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            last = blocks.pop()
            blocks[-1][0] += last[0]
            blocks[-1][1] += last[1]
            blocks[-1][3] = last[3]
    knots = [((b[2] + b[3]) / 2, b[0] / b[1]) for b in blocks]
    if len(knots) > KNOTS:  # keep the table short: the knots nearest to even quantiles
        step = (len(knots) - 1) / (KNOTS - 1)
        knots = [knots[round(i * step)] for i in range(KNOTS)]
    inner = [(round(x, 4), round(y, 4)) for x, y in knots if 0 < x < 1]
    return [(0.0, 0.0), *inner, (1.0, round(knots[-1][1], 4))]


SPLITS = ("train", "dev")


class Point(NamedTuple):
    """One threshold on a split's curve, measured on each row's quote."""

    threshold: float
    precision: float  # right among those flagged
    coverage: float  # answerable rows flagged (served, for the abstain threshold)
    unanswerable: float  # declining rows flagged

    @property
    def flags_well(self) -> bool:
        return self.precision >= PRECISION and self.unanswerable <= UNANSWERABLE


def threshold(data: list[Row], table, similarity) -> tuple[float, float, dict[str, list[Point]]]:
    """The lowest threshold meeting PRECISION and UNANSWERABLE on every split, the highest
    abstain threshold meeting SERVED on every split, and each split's curve."""
    saved = relevance.CALIBRATION
    relevance.CALIBRATION = tuple(table)
    try:
        quotes: dict[str, list[tuple[float, bool, bool]]] = {split: [] for split in SPLITS}
        for row in data:
            found = quote(relevance.Relevance(row.question, row.passages, similarity))
            if found is None:
                continue
            text, _, raw = found
            quotes[row.split].append(
                (relevance.calibrate(raw), row.judge(text), row.right is not None)
            )
    finally:
        relevance.CALIBRATION = saved
    curves = {split: _curve(found) for split, found in quotes.items()}
    steps = list(zip(*curves.values(), strict=True))  # each threshold's point on every split
    flags = [at[0].threshold for at in steps if all(p.flags_well for p in at)]
    serves = [at[0].threshold for at in steps if all(p.coverage >= SERVED for p in at)]
    return (flags[0] if flags else 0.95), max(serves, default=0.0), curves


def _curve(quotes: list[tuple[float, bool, bool]]) -> list[Point]:
    """Precision, coverage and unanswerable flagged at thresholds 0.05 to 0.95, from
    (calibrated score, right, answerable) of each row's quote."""
    answerable = sum(a for _, _, a in quotes)
    declining = len(quotes) - answerable
    curve = []
    for step in range(1, 20):
        t = step / 20
        flagged = [(r, a) for s, r, a in quotes if s >= t]
        flagged_answerable = sum(a for _, a in flagged)
        precision = sum(r for r, _ in flagged) / len(flagged) if flagged else 1.0
        unanswerable = (len(flagged) - flagged_answerable) / declining
        curve.append(Point(t, precision, flagged_answerable / answerable, unanswerable))
    return curve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if relevance.py is stale")
    parser.add_argument("--lexical", action="store_true", help="without the embedder")
    args = parser.parse_args(argv)
    similarity = None if args.lexical else SentenceSimilarity()
    data = training_rows() + dev_rows()
    table = isotonic(candidates(data, similarity))
    chosen, abstain, curves = threshold(data, table, similarity)
    if args.check:
        fitted = (tuple(table), chosen, abstain)
        stored = (
            relevance.CALIBRATION,
            relevance.DEFAULT_THRESHOLD,
            relevance.DEFAULT_ABSTAIN_THRESHOLD,
        )
        if fitted != stored:
            raise SystemExit("services/inference/relevance.py's calibration is stale: rerun this")
        return
    for split, curve in curves.items():
        print(f"{split}: threshold  precision  coverage  unanswerable flagged   (quotes)")
        for t, p, c, u in curve:
            mark = "   <- default" if t == chosen else "   <- abstain below" if t == abstain else ""
            print(f"{t:9.2f}  {p:9.2f}  {c:8.2f}  {u:8.2f}{mark}")
    print(f"CALIBRATION = {tuple(table)!r}")
    print(f"DEFAULT_THRESHOLD = {chosen}")
    print(f"DEFAULT_ABSTAIN_THRESHOLD = {abstain}")


if __name__ == "__main__":
    main()
