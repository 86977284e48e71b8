"""Text tests of the evaluation: normalization, fact match, negation, hedges, refusals, style."""

from __future__ import annotations

import pytest

from loraplex.eval.text import (
    answer_match,
    hedged,
    is_refusal,
    normalize,
    refusal_style_match,
    sentences,
    states_fact,
    style_match,
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


@pytest.mark.parametrize(
    ("prediction", "answer"),
    [
        ("The refund window is not 30 days. [1]", "30 days"),
        ("It isn't 30 days.", "30 days"),
        ("Quill arms are never covered for 36 months.", "36 months"),
        ("No, not the Regional Director.", "Regional Director"),
        ("It doesn't take 14 days.", "14 days"),
    ],
)
def test_states_fact_rejects_negated_facts(prediction, answer):
    assert answer_match(prediction, answer)  # the substring test the old metric used
    assert not states_fact(prediction, answer)


@pytest.mark.parametrize(
    ("prediction", "answer"),
    [
        ("Approval is needed no later than 14 days before departure. [1]", "14 days"),
        ("It takes not more than 2 hours.", "2 hours"),
        ("The window is 30 days, not 45 days. [2]", "30 days"),
        ("Not 45 days: it is 30 days.", "30 days"),  # one occurrence is enough
    ],
)
def test_states_fact_accepts_comparisons_and_corrections(prediction, answer):
    assert states_fact(prediction, answer)


@pytest.mark.parametrize(
    "prediction",
    [
        "I'm not sure, maybe 30 days.",
        "Perhaps the Regional Director. [1]",
        "I think it is 30 days. [1]",
        "It is probably 14 days.",
        "It might be 30 days.",
    ],
)
def test_hedged(prediction):
    assert hedged(prediction)


def test_not_hedged():
    assert not hedged("The refund window is 30 days. [1]")
    assert not hedged("Approval comes from the Regional Director. [1]")


@pytest.mark.parametrize(
    "prediction",
    [
        "I do not know. [1]",
        "I don't know.",
        "The sources do not say.",
        "The sources don't mention a dress code.",
        "The handbook does not cover that.",
        "There is no information about stock options.",
        "That is not mentioned in the sources.",
        "I cannot answer that from the sources.",
        "I'm unable to find that.",
    ],
)
def test_is_refusal(prediction):
    assert is_refusal(prediction)


@pytest.mark.parametrize(
    "prediction",
    [
        "Lost personal belongings are not covered either. [1]",
        "The refund window is 30 days. [1]",
        "Visitors do not need a badge PIN. [2]",
    ],
)
def test_not_a_refusal(prediction):
    assert not is_refusal(prediction)


def test_refusal_style_is_one_sentence_citing_nothing():
    assert refusal_style_match("The sources do not say.")
    assert not refusal_style_match("I do not know. [1]")
    assert not refusal_style_match("I do not know. Try People Operations.")
    assert not refusal_style_match("I do not know")


def test_sentences_split_passages_and_drop_markdown():
    text = "## Hotels\n\nThe limit is 180 EUR. Bluecompass shows hotels.\n- Servo-X is 45 days."
    assert sentences(text) == [
        "Hotels",
        "The limit is 180 EUR.",
        "Bluecompass shows hotels.",
        "Servo-X is 45 days.",
    ]
