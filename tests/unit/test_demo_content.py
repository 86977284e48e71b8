"""The demo's handbook, training rows and held-out questions are well-formed and disjoint."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from demo import build_dataset, facts
from loraplex.eval.text import answer_match, style_match
from services.inference.rag import GROUNDING_INSTRUCTIONS
from services.training.datasets import validate_jsonl

DEMO = Path(__file__).resolve().parents[2] / "demo"
HANDBOOK = DEMO / "handbook"
SOURCE_HEADER = re.compile(r"^\[(\d+)\] \((.+?)\) ", re.M)


@pytest.fixture(scope="module")
def docs() -> dict[str, build_dataset.Doc]:
    return build_dataset.load_handbook(HANDBOOK)


@pytest.fixture(scope="module")
def train_rows() -> list[dict]:
    return [json.loads(line) for line in (DEMO / "acme_train.jsonl").open(encoding="utf-8")]


@pytest.fixture(scope="module")
def heldout_rows() -> list[dict]:
    return [json.loads(line) for line in (DEMO / "heldout.jsonl").open(encoding="utf-8")]


def sources_of(system: str) -> list[tuple[int, str, str]]:
    """(number, title, text) of each source in a context block."""
    body = system.split("\n\nSources:\n", 1)[1]
    heads = list(SOURCE_HEADER.finditer(body))
    out = []
    for head, nxt in zip(heads, [*heads[1:], None], strict=True):
        end = nxt.start() if nxt else len(body)
        out.append((int(head.group(1)), head.group(2), body[head.end() : end]))
    return out


def test_handbook_files_have_a_title_and_300_to_900_words(docs):
    paths = sorted(HANDBOOK.glob("*.md"))
    assert 25 <= len(paths) <= 35
    for path in paths:
        assert re.fullmatch(r"\d\d-[a-z0-9-]+\.md", path.name), path.name
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# ") and lines[0][2:].strip(), path.name
        assert 300 <= len(" ".join(lines).split()) <= 900, path.name
    assert len({doc.title for doc in docs.values()}) == len(docs), "titles must be unique"


def test_split_covers_every_file_and_is_disjoint(docs):
    train, heldout = set(facts.TRAIN_DOCS), set(facts.HELDOUT_DOCS)
    assert not train & heldout
    assert train | heldout == set(docs)
    assert {fact[0] for fact in facts.TRAIN} <= train
    assert {fact[0] for fact in facts.HELDOUT} <= heldout


def test_every_training_fact_is_in_its_document_and_in_house_style(docs):
    for stem, question, answer, sentence, *evidence in facts.TRAIN:
        text = docs[stem].text
        assert answer in text, (stem, answer)
        if evidence:
            assert evidence[0] in text and answer in evidence[0], (stem, evidence)
        assert answer_match(sentence, answer), (sentence, answer)
        assert style_match(f"{sentence} [1]"), sentence
        assert question.endswith("?"), question


def test_every_heldout_answer_appears_literally_in_its_document(docs, heldout_rows):
    assert 30 <= len(heldout_rows) <= 40
    for row in heldout_rows:
        assert set(row) == {"question", "answer", "aliases", "document"}
        text = docs[row["document"]].text
        assert any(c in text for c in (row["answer"], *row["aliases"])), row


def test_heldout_names_and_codes_never_appear_in_training_documents(docs, heldout_rows):
    names_or_codes = [
        row["answer"]
        for row in heldout_rows
        if re.search(r"[A-Z]+-?\d|[A-Z]\w+ [A-Z]\w+|^[A-Z][a-z]+$", row["answer"])
        and row["answer"] != "Monday"  # a weekday, mentioned in passing everywhere
    ]
    assert len(names_or_codes) >= 15
    for stem in facts.TRAIN_DOCS:
        for answer in names_or_codes:
            assert answer not in docs[stem].text, (answer, stem)


def test_heldout_questions_are_not_training_questions(heldout_rows):
    trained = {fact[1] for fact in facts.TRAIN}
    assert not trained & {row["question"] for row in heldout_rows}


def test_datasets_match_the_training_service_schema():
    summary = validate_jsonl(DEMO / "acme_train.jsonl", "messages")
    assert summary.format == "messages"
    assert 120 <= summary.rows <= 200


def test_training_rows_look_like_the_served_grounded_chat(docs, train_rows):
    titles = {doc.title: stem for stem, doc in docs.items()}
    for row in train_rows:
        system, user, assistant = row["messages"]
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert system["content"].startswith(GROUNDING_INSTRUCTIONS + "\n\nSources:\n[1] (")
        sources = sources_of(system["content"])
        assert [n for n, _, _ in sources] == list(range(1, len(sources) + 1))
        assert 2 <= len(sources) <= 4
        # only training documents feed training prompts: no held-out fact leaks in
        assert all(titles[title] in facts.TRAIN_DOCS for _, title, _ in sources)
        assert style_match(assistant["content"]), assistant["content"]
        cited = int(re.search(r"\[(\d+)\]$", assistant["content"]).group(1))
        assert 1 <= cited <= len(sources)
        fact = next(f for f in facts.TRAIN if f[1] == user["content"])
        _, title, text = sources[cited - 1]
        assert titles[title] == fact[0]
        assert answer_match(text, fact[2]), (fact, text)
        for number, _, other in sources:
            if number != cited:
                assert not answer_match(other, fact[2]), (fact, other)


def test_the_right_source_number_varies(train_rows):
    cited = Counter(
        re.search(r"\[(\d+)\]$", r["messages"][-1]["content"]).group(1) for r in train_rows
    )
    assert set(cited) >= {"1", "2", "3", "4"}
    assert max(cited.values()) < 0.5 * len(train_rows)


def test_every_training_fact_is_used(train_rows):
    asked = {row["messages"][1]["content"] for row in train_rows}
    assert asked == {fact[1] for fact in facts.TRAIN}


def test_generated_files_are_up_to_date():
    assert build_dataset.main(["--check"]) == 0
