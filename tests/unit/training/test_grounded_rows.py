"""RAFT-style grounded rows: cite the passage among distractors, or decline; tenants' format."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from services.common.errors import InvalidArgument
from services.common.grounding import DECLINE, GROUNDING_INSTRUCTIONS
from services.training.datasets import check_row, detect_format, validate_jsonl
from services.training.grounded_rows import (
    GroundedRecord,
    Passage,
    Recipe,
    answered_row,
    build_rows,
    decline_row,
    expand,
    record_from_row,
)
from services.training.spec import DatasetInput, JobSpec
from services.training.worker import load_splits

SOURCE = re.compile(r"^\[(\d+)\] \((.+?)\) (.*)$", re.M)

FACTS = [
    ("How often are laptops replaced?", "Laptops are refreshed every 36 months.", "36 months"),
    ("How large is the gym subsidy?", "The gym subsidy is 30 EUR per month.", "30 EUR"),
    ("Who approves travel?", "Travel is approved by the Regional Director.", "Regional Director"),
    ("What is the chat tool?", "The company chat tool is Murmur.", "Murmur"),
    ("How long is probation?", "The probation period is 3 months.", "3 months"),
    ("Where are returns shipped?", "Returns go to the Lisvale Returns Centre.", "Lisvale"),
]  # fmt: skip
OTHER = [Passage("Misc", f"Filler passage number {w} about the canteen menu.") for w in "abcdef"]


def record(i: int, **extra) -> GroundedRecord:
    question, answer, key = FACTS[i]
    text = f"Some context. {answer} More context about page {i}."
    return GroundedRecord(question, answer, (Passage(f"Page {i}", text),), key=key, **extra)


def draw(rng: random.Random, rec: GroundedRecord) -> Passage:
    pool = [p for r in range(len(FACTS)) for p in record(r).passages] + OTHER
    return rng.choice(pool)


def parse(row: dict) -> tuple[list[tuple[int, str, str]], str, str]:
    system, user, assistant = (m["content"] for m in row["messages"])
    assert system.startswith(GROUNDING_INSTRUCTIONS + "\n\nSources:\n")
    sources = [(int(n), t, x) for n, t, x in SOURCE.findall(system)]
    return sources, user, assistant


def test_an_answered_row_cites_the_passage_wherever_it_lands():
    positions = Counter()
    for seed in range(40):
        row = answered_row(record(0), "Laptop refresh cycle?", 4, random.Random(seed), draw)
        sources, question, target = parse(row)
        assert question == "Laptop refresh cycle?" and len(sources) == 4
        cited = int(re.fullmatch(r".* \[(\d)\]", target).group(1))
        assert target == f"Laptops are refreshed every 36 months. [{cited}]"
        assert "36 months" in sources[cited - 1][2]
        assert all("36 months" not in text for n, _, text in sources if n != cited)
        positions[cited] += 1
    assert set(positions) == {1, 2, 3, 4}


def test_a_two_passage_answer_cites_both():
    both = GroundedRecord(
        "Gym subsidy and laptop cycle?",
        "The gym subsidy is 30 EUR and laptops last 36 months.",
        (record(1).passages[0], record(0).passages[0]),
        key="30 EUR",
    )
    sources, _, target = parse(answered_row(both, both.question, 3, random.Random(3), draw))
    numbers = [int(n) for n in re.findall(r"\[(\d)\]", target)]
    assert len(numbers) == 2 and numbers == sorted(numbers)
    texts = {sources[n - 1][2] for n in numbers}
    assert texts == {p.text for p in both.passages}


def test_a_decline_row_holds_no_passage_with_the_answer():
    for seed in range(20):
        row = decline_row(record(2), "Who signs off trips abroad?", 3, random.Random(seed), draw)
        sources, _, target = parse(row)
        assert target == DECLINE and "[" not in target
        assert all("Regional Director" not in text for _, _, text in sources)


def test_build_rows_mixes_phrasings_heavy_rows_and_declines_reproducibly():
    records = [record(i, paraphrases=(f"Paraphrase {i}?", f"Other wording {i}?")) for i in range(6)]
    recipe = Recipe(answered=3, decline_share=1.0, heavy_share=0.5)
    rows = build_rows(records, random.Random(7), draw, recipe=recipe)
    assert rows == build_rows(records, random.Random(7), draw, recipe=recipe)
    assert len(rows) == 6 * 4
    parsed = [parse(r) for r in rows]
    declines = [p for p in parsed if p[2] == DECLINE]
    assert len(declines) == 6
    for i in range(6):  # every phrasing of every record is used
        asked = {q for _, q, _ in parsed}
        assert {FACTS[i][0], f"Paraphrase {i}?", f"Other wording {i}?"} <= asked
    assert any(len(s) == 5 for s, _, t in parsed if t != DECLINE), "distractor-heavy rows"


def test_tenant_rows_are_validated_naming_the_line():
    good = {"question": "Q?", "answer": "A is 5. [1]", "passages": ["A is 5."]}
    assert detect_format(good) == "grounded_qa"
    assert record_from_row(good, 1).answer == "A is 5."  # a citation in the answer is ignored
    check_row(good, "grounded_qa", 1)
    bad = [
        ({**good, "passages": []}, "'passages' must list"),
        ({**good, "passages": ["a", "b", "c"]}, "'passages' must list"),
        ({**good, "answer": DECLINE}, "declines are generated"),
        ({**good, "paraphrases": "Q2?"}, "'paraphrases' must be a list"),
        ({**good, "passages": [{"title": "T"}]}, "a passage is a non-empty string"),
        ({"question": "Q?", "passages": ["x"]}, "'answer' must be a non-empty string"),
    ]
    for row, message in bad:
        with pytest.raises(InvalidArgument) as err:
            check_row(row, "grounded_qa", 3)
        assert err.value.message.startswith("line 3: ") and message in err.value.message


def tenant_rows() -> list[dict]:
    return [
        {
            "question": q,
            "answer": a,
            "passages": [{"title": f"Page {i}", "text": f"Intro. {a} Outro {i}."}],
            "paraphrases": [f"{q[:-1]}, please?"],
            "key": key,
        }
        for i, (q, a, key) in enumerate(FACTS)
    ]


def test_expand_turns_tenant_records_into_served_chat_rows():
    rows = expand(tenant_rows(), seed=1)
    assert rows == expand(tenant_rows(), seed=1)
    assert len(rows) >= 2 * len(FACTS)
    for row in rows:
        sources, question, target = parse(row)
        fact = next(f for f in FACTS if question in (f[0], f"{f[0][:-1]}, please?"))
        if target == DECLINE:
            assert all(fact[2] not in text for _, _, text in sources)
        else:
            cited = int(re.search(r"\[(\d)\]$", target).group(1))
            assert target.startswith(fact[1]) and fact[2] in sources[cited - 1][2]
    with pytest.raises(InvalidArgument, match="at least two records"):
        expand(tenant_rows()[:1], seed=1)


def test_the_worker_expands_grounded_datasets_after_the_split(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in tenant_rows()))
    assert validate_jsonl(path).format == "grounded_qa"
    spec = JobSpec(base_model="tiny", train=[DatasetInput("d1")], validation_ratio=0.2)
    splits = load_splits({"datasets": {"d1": str(path)}}, spec, tmp_path)
    train_questions = {r["messages"][1]["content"] for r in splits.train}
    held = {r["messages"][1]["content"] for r in splits.validation}
    assert splits.train and splits.validation and all("messages" in r for r in splits.train)
    stems = {q.split(",")[0].rstrip("?") for q in held}
    assert not any(q.split(",")[0].rstrip("?") in stems for q in train_questions), (
        "a held-out record's paraphrases stay out of training"
    )
