"""Relevance and the calibrated grounding score: does the cited sentence answer the question.

Lexical (no embedder) so the unit tests load no model; the embedder's part is exercised
by tests/unit/eval/test_recheck.py.
"""

from __future__ import annotations

import pytest

from services.common.grounding import DECLINE
from services.inference.grounding import AbstainPolicy, Refusal, check_answer
from services.inference.relevance import (
    CALIBRATION,
    DEFAULT_ABSTAIN_THRESHOLD,
    DEFAULT_THRESHOLD,
    Relevance,
    calibrate,
)

WARRANTY = {
    1: "Quill arms are covered for 36 months from delivery. The Tern battery pack is a wear"
    " part and is covered for 12 months only. Claims are filed with form WR-4.",
    2: "Returns are accepted within 30 days of delivery. The canteen serves lunch from 11:30"
    " to 14:00 on weekdays.",
}
QUESTION = "How long is the warranty on the Tern battery pack?"
#: These scores are lexical (no embedder); the default thresholds are fitted with the
#: embedder, whose cosine lifts an answering sentence, so the tests judge at this one.
LEXICAL = 0.5


def test_the_sentence_that_answers_ranks_first():
    relevance = Relevance(QUESTION, WARRANTY)
    best = relevance.best()
    assert best is not None and best.number == 1 and "Tern battery" in best.text
    lunch = next(s for s in relevance.sentences if "canteen" in s.text)
    assert best.relevance > 2 * lunch.relevance


def test_the_neighbouring_figure_on_the_right_page_scores_lower():
    right = check_answer("The Tern battery pack is covered for 12 months. [1]", WARRANTY,
                         question=QUESTION, threshold=LEXICAL)  # fmt: skip
    # 36 months is on the cited page, but in the sentence about Quill arms
    neighbour = check_answer("The Tern battery pack is covered for 36 months. [1]", WARRANTY,
                             question=QUESTION, threshold=LEXICAL)  # fmt: skip
    assert right.grounded and right.score >= LEXICAL
    assert neighbour.citations[1].supported  # the words are on the page...
    assert neighbour.score < right.score and not neighbour.grounded  # ...not the answer


def test_a_true_sentence_that_does_not_answer_is_not_grounded():
    # The model copied a passage sentence for a question the passages do not answer.
    verdict = check_answer(
        "Returns are accepted within 30 days of delivery. [2]",
        WARRANTY,
        question="How many parking spaces are there at Brenmoor?",
    )
    assert verdict.citations[2].supported and not verdict.grounded
    assert verdict.score < DEFAULT_THRESHOLD


def test_the_kind_of_answer_asked_for_counts():
    who = Relevance("Who approves warranty claims?", WARRANTY)
    asks_number = Relevance("How many days do returns take?", WARRANTY)
    form = next(s for s in who.sentences if "WR-4" in s.text)
    days = next(s for s in asks_number.sentences if "30 days" in s.text)
    assert days.relevance > form.relevance  # "who" wants a person; the form sentence has none


def test_a_two_part_question_needs_both_facts():
    question = "How long are Quill arms covered, and how long the Tern battery pack?"
    both = check_answer(
        "Quill arms are covered for 36 months and the Tern battery pack for 12 months. [1]",
        WARRANTY,
        question=question,
    )
    one = check_answer("The Tern battery pack is covered for 12 months. [1]", WARRANTY,
                       question=question)  # fmt: skip
    assert both.score > one.score


def test_threshold_decides_the_flag():
    text = "The Tern battery pack is covered for 12 months. [1]"
    loose = check_answer(text, WARRANTY, question=QUESTION, threshold=0.0)
    strict = check_answer(text, WARRANTY, question=QUESTION, threshold=1.0)
    assert loose.score == strict.score and loose.grounded and not strict.grounded
    assert loose.threshold == 0.0 and strict.threshold == 1.0


def test_quote_serves_the_most_relevant_sentence_and_refuse_declines():
    wrong = "Claims are filed with form WR-4. [1]"
    quote = check_answer(wrong, WARRANTY, question=QUESTION, policy=AbstainPolicy.QUOTE,
                         threshold=LEXICAL)  # fmt: skip
    assert quote.quoted and quote.grounded and "Tern battery pack" in quote.text
    assert quote.text.endswith("[1]") and quote.score >= LEXICAL
    # the model's own checked answer stays beside it, for the user and the evaluation
    assert quote.checked_text == wrong and quote.checked_score < quote.score
    refuse = check_answer(wrong, WARRANTY, question=QUESTION, policy=AbstainPolicy.REFUSE)
    assert refuse.text == DECLINE and refuse.refusal is Refusal.NOT_SUPPORTED
    assert not refuse.grounded and refuse.checked_text == wrong
    off = check_answer(wrong, WARRANTY, question=QUESTION)
    assert off.text == wrong and not off.grounded and not off.quoted


def test_nothing_is_served_below_the_abstain_threshold():
    text = "Returns are accepted within 30 days of delivery. [2]"
    question = "How many parking spaces are there at Brenmoor?"
    served = check_answer(text, WARRANTY, question=question, policy=AbstainPolicy.QUOTE,
                          abstain_below=0.0)  # fmt: skip
    declined = check_answer(text, WARRANTY, question=question, policy=AbstainPolicy.QUOTE,
                            abstain_below=1.0)  # fmt: skip
    assert served.text != DECLINE and not served.grounded
    assert declined.text == DECLINE and declined.refusal is Refusal.NOT_SUPPORTED


def test_a_model_decline_stands_unless_a_quote_reaches_the_threshold():
    kept = check_answer(DECLINE, WARRANTY, question="Who founded Acme?",
                        policy=AbstainPolicy.QUOTE)  # fmt: skip
    assert kept.text == DECLINE and kept.refusal is Refusal.MODEL_DECLINED
    replaced = check_answer(DECLINE, WARRANTY, question=QUESTION, policy=AbstainPolicy.QUOTE,
                            threshold=LEXICAL)  # fmt: skip
    assert replaced.quoted and replaced.grounded and "12 months" in replaced.text


def test_figures_from_two_cited_passages_back_one_claim():
    # the chunk boundary cuts the sentence: 180 EUR in one passage, 240 EUR in the next
    passages = {
        1: "## Hotels\n\nThe hotel limit is 180 EUR per night in standard",
        2: "standard cities and 240 EUR per night in the tier-1 cities listed on Dockyard.",
    }
    text = "The hotel limit is 180 EUR per night in standard cities and 240 EUR in tier-1 cities."
    verdict = check_answer(f"{text} [1][2]", passages, question="hotel limit per night?")
    assert verdict.citations[1].cited and verdict.citations[2].cited
    assert not verdict.citations[1].dropped and not verdict.citations[2].dropped
    assert verdict.grounded


@pytest.mark.parametrize(
    ("answer", "checked"),
    [
        # the marker sat inside the sentence: no "listed on ." is left behind
        ("Hotels are listed on [3].", "Hotels are listed on."),
        # a group after the full stop cites the same claim
        ("Hotels are listed on Dockyard. [3] [1]", "Hotels are listed on Dockyard. [1]"),
    ],
)
def test_no_sentence_is_left_broken_where_a_marker_was_removed(answer, checked):
    passages = {1: "Hotels are listed on Dockyard.", 3: "Alcohol is not reimbursable."}
    assert check_answer(answer, passages).text == checked


def test_calibration_is_a_share_rising_with_the_raw_score():
    xs = [x for x, _ in CALIBRATION]
    ys = [y for _, y in CALIBRATION]
    assert xs == sorted(xs) and ys == sorted(ys)
    assert xs[0] == 0.0 and xs[-1] == 1.0 and ys[0] >= 0 and ys[-1] <= 1
    assert calibrate(0.0) == ys[0] and calibrate(1.0) == ys[-1]
    assert calibrate(-1.0) == ys[0] and calibrate(2.0) == ys[-1]
    assert 0 < DEFAULT_ABSTAIN_THRESHOLD < DEFAULT_THRESHOLD < 1


def test_no_question_means_relevance_cannot_be_told_and_support_decides():
    text = "The Tern battery pack is covered for 12 months. [1]"
    assert check_answer(text, WARRANTY).grounded
    assert not check_answer(
        "The Tern battery pack is covered for 18 months. [1]", WARRANTY
    ).grounded


def test_an_answer_with_every_claim_cut_is_never_served():
    text = "Quill arms are covered for 99 months. [1]"  # no passage supports it
    verdict = check_answer(text, WARRANTY, question=QUESTION, policy=AbstainPolicy.REFUSE,
                           abstain_below=0.0)  # fmt: skip
    assert verdict.text == DECLINE and verdict.refusal is Refusal.NOT_SUPPORTED


SHOP = {
    1: "The Quill arm weighs 7 kg and lifts 5 kg. The Quill arm costs 4,000 EUR per unit."
    " Support answers within 2 hours. The Lisvale shop opens at 08:30.",
    2: "The canteen serves lunch on weekdays. Odile Fairbrook is our chief executive.",
}


@pytest.mark.parametrize(
    ("question", "answering", "not_answering"),
    [
        # a price is a sum of money: "7 kg" is a number, not a price
        ("quill arm price?", "4,000 EUR", "weighs 7 kg"),
        # how long wants a duration; a clock time is not one
        ("how long until support answers", "2 hours", "08:30"),
        # opening hours want a time of day; a duration is not one
        ("lisvale shop opening hours", "08:30", "2 hours"),
    ],
)
def test_the_kind_of_quantity_asked_counts(question, answering, not_answering):
    relevance = Relevance(question, SHOP)
    right = next(s for s in relevance.sentences if answering in s.text)
    wrong = next(s for s in relevance.sentences if not_answering in s.text)
    assert relevance.wants.answered_by(right.text)
    assert not relevance.wants.answered_by(wrong.text)


def test_a_name_typed_in_lower_case_is_still_the_name_asked_about():
    # "lisvale" is only ever written "Lisvale" in the passages: it names the shop asked about,
    # so the canteen sentence (no Lisvale in it) does not answer "lisvale canteen hours"
    relevance = Relevance("lisvale canteen hours", SHOP)
    assert "lisvale" in relevance.wants.names
    assert "canteen" not in relevance.wants.names  # written in lower case: an ordinary word
    canteen = next(s for s in relevance.sentences if "canteen" in s.text)
    lexical_only = Relevance("Lisvale canteen hours", SHOP)
    assert canteen.relevance == next(
        s.relevance for s in lexical_only.sentences if "canteen" in s.text
    )


def test_the_person_asked_about_is_not_the_answer_to_who():
    # "who was ceo before odile": Odile Fairbrook is in the question, so she is not the answer
    relevance = Relevance("who was ceo before odile", SHOP)
    assert not relevance.wants.answered_by("Odile Fairbrook is our chief executive.")
    assert Relevance("who is the ceo", SHOP).wants.answered_by(
        "Odile Fairbrook is our chief executive."
    )
