"""The demo's handbook, training rows and held-out questions are well-formed and disjoint."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from demo import build_dataset, facts, phrasings
from loraplex.eval.text import answer_match, style_match
from services.common.grounding import DECLINE, GROUNDING_INSTRUCTIONS
from services.inference.grounding import check_answer
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
    assert 200 <= summary.rows <= 300, "sized for the 15-minute demo"


def _kind(assistant: str) -> str:
    if assistant == DECLINE:
        return "decline"
    return "pair" if len(re.findall(r"\[\d+\]", assistant)) == 2 else "answer"


def _facts_asked(question: str) -> list[tuple[str, ...]]:
    """The training facts a question asks for (one, two for a pair, none if unanswerable)."""
    by_question = {fact[1]: fact for fact in facts.TRAIN}
    for first, second, asked, _ in phrasings.PAIRS:
        if asked == question:
            return [by_question[first], by_question[second]]
    for original, others in phrasings.PARAPHRASES.items():
        if question == original or question in others:
            return [by_question[original]]
    assert question in {q for _, q in phrasings.UNANSWERABLE}, question
    return []


def test_training_rows_look_like_the_served_grounded_chat(docs, train_rows):
    titles = {doc.title: stem for stem, doc in docs.items()}
    for row in train_rows:
        system, user, assistant = row["messages"]
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
        assert system["content"].startswith(GROUNDING_INSTRUCTIONS + "\n\nSources:\n[1] (")
        sources = sources_of(system["content"])
        assert [n for n, _, _ in sources] == list(range(1, len(sources) + 1))
        assert 1 <= len(sources) <= 5
        # only training documents feed training prompts: no held-out fact leaks in
        assert all(titles[title] in facts.TRAIN_DOCS for _, title, _ in sources)
        asked = _facts_asked(user["content"])
        cited = [int(n) for n in re.findall(r"\[(\d+)\]", assistant["content"])]
        if assistant["content"] == DECLINE:
            # declines: no source holds what was asked
            for fact in asked:
                assert not any(answer_match(text, fact[2]) for _, _, text in sources), fact
            continue
        assert style_match(assistant["content"]), assistant["content"]
        assert len(cited) == len(asked) and all(1 <= n <= len(sources) for n in cited)
        for fact in asked:
            assert answer_match(assistant["content"], fact[2]), (fact, assistant)
            holding = [n for n, _, text in sources if answer_match(text, fact[2])]
            # distractors never hold the fact; the other page of a pair may mention it
            assert holding and set(holding) <= set(cited), (fact, sources)
            assert fact[0] in {titles[sources[n - 1][1]] for n in holding}


def test_rows_of_every_kind_in_useful_shares(train_rows):
    kinds = Counter(_kind(r["messages"][-1]["content"]) for r in train_rows)
    assert kinds["pair"] == len(phrasings.PAIRS) >= 12
    assert 0.15 <= kinds["decline"] / len(train_rows) <= 0.3
    heavy = [r for r in train_rows if len(sources_of(r["messages"][0]["content"])) == 5]
    assert len(heavy) >= 0.1 * len(train_rows), "distractor-heavy rows"


def test_the_right_source_number_varies(train_rows):
    cited = Counter(
        m.group(1)
        for r in train_rows
        if (m := re.search(r"\[(\d+)\]$", r["messages"][-1]["content"]))
    )
    assert set(cited) >= {"1", "2", "3", "4", "5"}
    assert max(cited.values()) < 0.4 * sum(cited.values())


def test_every_training_fact_is_answered_in_two_phrasings(train_rows):
    answered = Counter(
        row["messages"][1]["content"]
        for row in train_rows
        if row["messages"][-1]["content"] != DECLINE
    )
    assert set(phrasings.PARAPHRASES) == {fact[1] for fact in facts.TRAIN}
    for question, others in phrasings.PARAPHRASES.items():
        assert len({question.lower(), *(o.lower() for o in others)}) == 3
        assert sum(answered[q] for q in (question, *others)) == 2, question
        assert sum(1 for q in (question, *others) if answered[q]) == 2, question


def test_unanswerable_questions_are_not_answered_by_the_handbook(docs):
    """Their distinctive words appear nowhere in the handbook (checked by hand first)."""
    handbook = " ".join(doc.text.lower() for doc in docs.values())
    for word in ("sabbatical", "frequent flyer", "linter", "dog", "life insurance", "visa",
                 "revenue", "donation", "weigh", "late fee", "relocat", "coverage",
                 "performance bonus", "cloud provider"):  # fmt: skip
        assert word not in handbook, word
    assert len(phrasings.UNANSWERABLE) >= 20
    assert {stem for stem, _ in phrasings.UNANSWERABLE} <= set(facts.TRAIN_DOCS)


def test_pairs_need_two_pages_and_state_both_facts():
    by_question = {fact[1]: fact for fact in facts.TRAIN}
    for first, second, question, sentence in phrasings.PAIRS:
        a, b = by_question[first], by_question[second]
        assert a[0] != b[0], "two different pages"
        assert answer_match(sentence, a[2]) and answer_match(sentence, b[2]), sentence
        assert style_match(f"{sentence} [1][2]"), sentence
        assert question.endswith(("?", ".")), question


def test_the_serving_check_keeps_the_right_citations_and_drops_wrong_ones(train_rows):
    """The inference service's citation check against the training targets: a target's
    citations are kept, and the same sentence cited to any distractor is dropped (the
    support half of the check; relevance and the threshold are calibrated on these rows
    and the dev set by demo/calibrate_grounding.py)."""
    kept = total = wrong_kept = wrong = 0
    for row in train_rows:
        system, user, assistant = (m["content"] for m in row["messages"])
        if assistant == DECLINE:
            continue
        passages = {n: text.strip() for n, _, text in sources_of(system)}
        total += 1
        cited = re.findall(r"\[(\d+)\]", assistant)
        checks = check_answer(assistant, passages, question=user).citations
        kept += all(checks[int(n)].cited for n in cited)
        if len(cited) == 1:
            for other in set(passages) - {int(cited[0])}:
                moved = re.sub(r"\[\d+\]$", f"[{other}]", assistant)
                wrong += 1
                wrong_kept += check_answer(moved, passages, question=user).citations[other].cited
    assert kept / total >= 0.97, (kept, total)
    assert wrong > 400 and wrong_kept / wrong <= 0.01, (wrong_kept, wrong)


def test_generated_files_are_up_to_date():
    assert build_dataset.main(["--check"]) == 0
