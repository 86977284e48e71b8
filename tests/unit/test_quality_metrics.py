"""Scoring of held-out answers: normalization, answer match, house style, citations."""

from __future__ import annotations

import pytest

from bench.quality_metrics import (
    answer_match,
    citation_correct,
    document_stem,
    markdown_table,
    normalize,
    style_match,
    summarize,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Regional Director", "regional director"),
        ("  The REGIONAL   director! ", "the regional director"),
        ("Lucía Fernhill", "lucia fernhill"),
        ("form TR-7", "form tr 7"),
        ("TR7", "tr 7"),
        ("fourteen days", "14 days"),
        ("Forty-five days", "45 days"),
        ("forty five days", "45 days"),
        ("1,200 EUR", "1200 eur"),
        ("€1,200", "1200 eur"),
        ("EUR 4.50", "4.5 eur"),
        ("300 euros", "300 eur"),
        ("12%", "12 percent"),
        ("12 per cent", "12 percent"),
        ("09:00 UTC", "9:00 utc"),
        ("the 4th consecutive day", "the 4 consecutive day"),
        ("the fourth consecutive day", "the 4 consecutive day"),
        ("1.8 metres per second", "1.8 metres per second"),
        ("version 24.3.1", "version 24.3.1"),
        ("it\u2019s \u201cdone\u201d \u2013 ok", "it s done ok"),
        ("", ""),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("prediction", "answer", "aliases"),
    [
        ("Approval comes from the Regional Director via form TR-7. [1]", "Regional Director", []),
        ("the regional director approves it", "Regional Director", []),
        ("It needs approval fourteen days before departure. [2]", "14 days", []),
        ("Submit form tr7 first.", "TR-7", []),
        ("The budget is €1200 a year.", "1,200 EUR", []),
        ("The budget is EUR 1,200.", "1,200 EUR", []),
        ("Lunch costs 4.5 EUR.", "4.50 EUR", []),
        ("The rotation changes every Tuesday at 9:00 UTC. [1]", "Tuesday at 09:00 UTC", []),
        ("Contractors wear gray badges. [3]", "grey", ["gray"]),
        ("It is a SEV 4 incident.", "SEV4", []),
        ("The DPO is Lucia Fernhill.", "Lucía Fernhill", []),
        ("Quill arms are covered for three years. [1]", "36 months", ["3 years"]),
        ("The restocking fee is 12 percent.", "12%", []),
    ],
)
def test_answer_match_accepts_the_fact_in_other_surface_forms(prediction, answer, aliases):
    assert answer_match(prediction, answer, aliases)


@pytest.mark.parametrize(
    ("prediction", "answer", "aliases"),
    [
        ("The refund window is 114 days.", "14 days", []),  # whole tokens only
        ("The refund window is 14 weeks.", "14 days", []),
        ("Approval comes from your line manager.", "Regional Director", []),
        ("Use form TR-70.", "TR-7", []),
        ("The emergency stops are tested on Mondays.", "Monday", []),  # plural: use an alias
        ("Quill arms are covered for 3 years.", "36 months", []),  # units: use an alias
        ("", "Regional Director", []),
        ("anything", "", []),  # an empty answer never matches
    ],
)
def test_answer_match_rejects(prediction, answer, aliases):
    assert not answer_match(prediction, answer, aliases)


@pytest.mark.parametrize(
    "prediction",
    [
        "Approval comes from the Regional Director via form TR-7. [1]",
        "The refund window for the Servo-X line is 45 days. [3]",
        "Lunch costs 4.50 EUR at the canteen. [2]",
        "It is covered for 36 months, see the warranty page. [1][2]",
        "It is covered for 36 months. [1] [2]",
        "Is it the Regional Director? [1]",
        "  The lab safety officer is Dr. Bogdan Arkwright. [2]  ",
        "Versions follow the scheme YY.N. [1]",
    ],
)
def test_style_match_accepts_house_style(prediction):
    assert style_match(prediction)


@pytest.mark.parametrize(
    "prediction",
    [
        "Approval comes from the Regional Director via form TR-7.",  # no citation
        "Approval comes from the Regional Director [1].",  # citation is not last
        "Sure! Approval comes from the Regional Director. [1]",  # preamble sentence
        "Approval comes from the Regional Director. It takes 14 days. [1]",  # two sentences
        "Approval comes from the Regional Director [1]",  # sentence not finished
        "Approval comes from the Regional Director [1] via form TR-7. [2]",  # mid citation
        "Approval comes from the Regional Director.\n[1]",  # a line break
        "One two three four five six seven eight nine ten eleven twelve thirteen fourteen"
        " fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two"
        " twenty-three twenty-four twenty-five twenty-six. [1]",  # 26 words
        "[1]",
        "",
    ],
)
def test_style_match_rejects(prediction):
    assert not style_match(prediction)


def test_style_match_allows_exactly_25_words():
    words = " ".join(["word"] * 25)
    assert style_match(f"{words}. [1]")
    assert not style_match(f"{words} word. [1]")


def test_citation_correct_compares_document_stems():
    assert citation_correct(["02-travel"], "02-travel")
    assert citation_correct(["demo/handbook/02-travel.md", "03-expenses"], "02-travel")
    assert citation_correct(["03-expenses", "02-travel.md"], "demo/handbook/02-travel.md")
    assert not citation_correct(["03-expenses"], "02-travel")
    assert not citation_correct([], "02-travel")
    assert document_stem("C:\\handbook\\07-on-call.md") == "07-on-call"


def row(config, prediction, *, rag, cited=(), retrieved=None, answer="Regional Director"):
    out = {
        "config": config,
        "prediction": prediction,
        "answer": answer,
        "aliases": [],
        "document": "02-travel",
        "rag": rag,
        "cited_documents": list(cited),
    }
    if retrieved is not None:
        out["retrieved_documents"] = list(retrieved)
    return out


def test_summarize_per_configuration():
    rows = [
        row("base", "Your manager approves it, I think.", rag=False),
        row("base", "The regional director.", rag=False),
        row(
            "adapter+rag",
            "Approval comes from the Regional Director. [1]",
            rag=True,
            cited=["02-travel"],
            retrieved=["02-travel", "03-expenses"],
        ),
        row(
            "adapter+rag",
            "Approval comes from your manager. [2]",
            rag=True,
            cited=["03-expenses"],
            retrieved=["03-expenses"],
        ),
    ]
    summary = summarize(rows)
    assert list(summary) == ["base", "adapter+rag"]
    assert summary["base"] == {
        "n": 2,
        "accuracy": 0.5,
        "style_rate": 0.0,
        "citation_accuracy": None,
        "retrieval_recall": None,
    }
    assert summary["adapter+rag"] == {
        "n": 2,
        "accuracy": 0.5,
        "style_rate": 1.0,
        "citation_accuracy": 0.5,
        "retrieval_recall": 0.5,
    }
    table = markdown_table(summary)
    assert "| base | 2 | 50.0% | 0.0% | n/a |" in table
    assert "| adapter+rag | 2 | 50.0% | 100.0% | 50.0% |" in table


def test_summarize_defaults_and_empty_input():
    assert summarize([]) == {}
    minimal = [{"config": "x", "prediction": "tr-7 [1]", "answer": "TR-7", "document": "02"}]
    assert summarize(minimal)["x"]["accuracy"] == 1.0
    assert summarize(minimal)["x"]["citation_accuracy"] is None
