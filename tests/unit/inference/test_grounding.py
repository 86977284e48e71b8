"""The serving-time citation check: numbers, names, negation, groups, refusals, abstaining."""

from __future__ import annotations

import pytest

from services.common.grounding import (
    DECLINE,
    GROUNDING_INSTRUCTIONS,
    Passage,
    claim,
    context_block,
    holds_answer,
    is_refusal,
    proper_nouns,
    support,
)
from services.inference.grounding import AbstainPolicy, Refusal, check_answer

PASSAGES = {
    1: "Business class is reserved for the executive team. Travel abroad must be approved by"
    " your Regional Director using form TR-7 at least fourteen days before departure.",
    2: "Laptops are refreshed every 36 months. The IT team contacts you about a month before"
    " your refresh. Alcohol is not reimbursable.",
    3: "Employees receive a gym subsidy of 30 EUR per month, paid with the salary. Claims"
    " above 2,000 EUR also need approval from Finance Controller Helga Marsden.",
}


def check(text: str, policy: AbstainPolicy = AbstainPolicy.OFF, question: str = ""):
    return check_answer(text, PASSAGES, question=question, policy=policy)


def test_a_supported_citation_is_kept_and_the_text_untouched():
    text = "Travel abroad is approved by the Regional Director via form TR-7. [1]"
    verdict = check(text)
    assert verdict.text == text and verdict.grounded and verdict.refusal is Refusal.NONE
    first = verdict.citations[1]
    assert first.cited and first.supported and not first.dropped and first.support > 0.8
    assert not verdict.citations[2].cited and verdict.citations[2].support == 0.0


@pytest.mark.parametrize(
    ("answer", "missing"),
    [
        ("Laptops are refreshed every 24 months. [2]", "24"),  # wrong number
        ("Claims above 2,000 EUR need approval from Helga Marsden. [2]", "marsden"),  # wrong page
        ("Claims above 2,000 EUR need approval from CFO Marek Ostrander. [3]", "ostrander"),
        ("Travel abroad is approved with form TR-9. [1]", "tr9"),  # wrong code
        ("The gym subsidy is 30 USD per month. [3]", "usd"),
    ],
)
def test_a_citation_whose_passage_lacks_a_number_name_or_code_is_dropped(answer, missing):
    verdict = check(answer)
    assert not verdict.grounded
    assert "[" not in verdict.text and verdict.text == answer.rsplit(" [", 1)[0]
    cited = int(answer[-2])
    assert verdict.citations[cited].dropped and not verdict.citations[cited].supported
    names = proper_nouns(PASSAGES.values())
    assert missing in claim(answer, names).required - Passage(PASSAGES[cited]).terms


def test_number_forms_match_across_writing_styles():
    assert check("Approval is needed 14 days before departure. [1]").grounded  # "fourteen"
    assert check("Claims above 2000 EUR need approval from Helga Marsden. [3]").grounded
    assert check("Laptops are refreshed every thirty-six months. [2]").grounded
    assert not check("Laptops are refreshed every thirty-two months. [2]").grounded


def test_negation_in_answer_or_passage_unsupports():
    assert not check("Laptops are not refreshed every 36 months. [2]").grounded
    assert not check("Alcohol is reimbursable. [2]").grounded
    assert check("Alcohol is not reimbursable. [2]").grounded
    assert check("No, alcohol is not reimbursable. [2]").grounded  # "No," answers, not negates


def test_a_negation_about_other_words_does_not_unsupport():
    passage = {
        1: "Company laptops lock automatically after 5 minutes without activity, and this"
        " setting cannot be changed. Telemetry is kept for 18 months, so that no customer"
        " can be identified."
    }
    text = "Company laptops lock automatically after 5 minutes without activity. [1]"
    assert check_answer(text, passage).grounded
    assert check_answer("Telemetry is kept for 18 months. [1]", passage).grounded
    assert not check_answer("Company laptops do not lock after 5 minutes. [1]", passage).grounded


def test_an_acronym_matches_the_words_it_abbreviates():
    passage = {1: "Purchases above 25,000 EUR need approval from the Chief Financial Officer."}
    assert check_answer("Purchases above 25,000 EUR need CFO approval. [1]", passage).grounded
    assert not check_answer("Purchases above 25,000 EUR need CEO approval. [1]", passage).grounded


def test_too_few_content_words_in_the_passage_unsupports():
    verdict = check("The IT team ships a new docking station and headset yearly. [2]")
    assert not verdict.grounded and verdict.citations[2].dropped
    assert 0 < verdict.citations[2].support < 0.6


def test_each_claim_is_checked_against_its_own_citation():
    text = "The gym subsidy is 30 EUR per month [3] and laptops are refreshed every 36 months [2]."
    verdict = check(text)
    assert verdict.grounded and verdict.text == text
    swapped = "The gym subsidy is 30 EUR per month [2] and laptops last 36 months [3]."
    verdict = check(swapped)
    assert not verdict.grounded and "[" not in verdict.text
    assert verdict.citations[2].dropped and verdict.citations[3].dropped


def test_a_claim_may_need_two_sources_together():
    verdict = check("The gym subsidy is 30 EUR and laptops last 36 months. [2][3]")
    assert verdict.grounded and verdict.text.endswith("[2][3]")
    assert verdict.citations[2].supported and verdict.citations[3].supported
    padded = check("The gym subsidy is 30 EUR per month. [1][3]")
    assert padded.grounded and padded.text.endswith("month. [3]")
    assert padded.citations[1].dropped and not padded.citations[1].supported


def test_an_uncited_claim_leaves_the_answer_ungrounded():
    verdict = check("Laptops are refreshed every 36 months. [2] The gym subsidy is 30 EUR.")
    assert not verdict.grounded and verdict.citations[2].cited
    assert not check("Laptops are refreshed every 36 months.").grounded


@pytest.mark.parametrize(
    "text",
    [
        DECLINE,
        "I do not know. [1]",
        "I don't know.",
        "The handbook does not say how often the gym subsidy changes.",
        "The sources don't mention a sabbatical. [2]",
        "Sorry, I cannot find that in the sources.",
        "There is no information about parking.",
        "This is not specified in the sources [3].",
    ],
)
def test_refusals_are_recognised_and_cite_nothing(text):
    assert is_refusal(text)
    verdict = check(text, AbstainPolicy.REFUSE)
    assert verdict.refusal is Refusal.MODEL_DECLINED and not verdict.grounded
    assert "[" not in verdict.text and verdict.text.startswith(text.split(" [")[0][:10])
    assert not any(c.cited for c in verdict.citations.values())


@pytest.mark.parametrize(
    "text",
    [
        "Laptops are refreshed every 36 months. [2]",
        "Trips between sites do not need approval. [1]",
        "You cannot claim alcohol. [2]",
        "I do not know exactly, but it is probably 36 months. [2]",  # a hedge with a fact
    ],
)
def test_answers_and_hedges_with_facts_are_not_refusals(text):
    assert not is_refusal(text)


def test_a_hedged_answer_is_judged_on_its_facts():
    assert check("I think laptops are probably refreshed every 36 months. [2]").grounded
    assert not check("Maybe laptops are refreshed every 48 months? [2]").grounded


def test_abstain_refuse_answers_the_fixed_decline_with_a_reason():
    text = "Travel abroad is approved by the CEO Odile Fairbrook. [1]"
    off = check(text)
    assert off.text == "Travel abroad is approved by the CEO Odile Fairbrook."
    assert not off.grounded and off.refusal is Refusal.NONE
    refused = check(text, AbstainPolicy.REFUSE)
    assert refused.text == DECLINE and refused.refusal is Refusal.NOT_SUPPORTED
    assert refused.citations[1].dropped and refused.citations[1].support > 0
    uncited = check("The CEO is Odile Fairbrook.", AbstainPolicy.REFUSE)
    assert uncited.text == DECLINE and uncited.refusal is Refusal.NOT_SUPPORTED


def test_abstain_keeps_the_supported_claims_and_cuts_the_rest():
    text = "Laptops are refreshed every 36 months. [2] The CEO is Odile Fairbrook. [1]"
    verdict = check(text, AbstainPolicy.REFUSE)
    assert verdict.text == "Laptops are refreshed every 36 months. [2]"
    assert verdict.grounded and verdict.refusal is Refusal.NONE
    assert verdict.citations[1].dropped and verdict.citations[2].cited


def test_abstaining_cites_for_the_model_where_a_passage_supports_the_claim():
    uncited = "Laptops are refreshed every 36 months."
    assert check(uncited).text == uncited and not check(uncited).grounded  # off: marked only
    verdict = check(uncited, AbstainPolicy.REFUSE)
    assert verdict.text == "Laptops are refreshed every 36 months. [2]" and verdict.grounded
    assert verdict.citations[2].added and verdict.citations[2].cited
    moved = check("Laptops are refreshed every 36 months. [1]", AbstainPolicy.REFUSE)
    assert moved.text == "Laptops are refreshed every 36 months. [2]"
    assert moved.citations[1].dropped and moved.citations[2].added
    kept = check("Laptops are refreshed every 36 months. [2]", AbstainPolicy.REFUSE)
    assert not kept.citations[2].added and kept.citations[2].cited


def test_a_passage_must_be_about_what_the_question_asked():
    passages = {1: "Our chief executive today is Odile Fairbrook, who leads the Brenmoor site."}
    answer = "The award went to Odile Fairbrook, who leads the Brenmoor site."
    asked = "Who won the employee of the year award?"
    assert not check_answer(answer, passages, question=asked, policy=AbstainPolicy.REFUSE).grounded
    fair = "Odile Fairbrook leads the Brenmoor site."
    assert check_answer(fair, passages, question="Who leads Brenmoor?").grounded is False  # uncited
    verdict = check_answer(
        fair, passages, question="Who leads Brenmoor?", policy=AbstainPolicy.REFUSE
    )
    assert verdict.grounded and verdict.citations[1].added


def test_an_abbreviation_does_not_end_the_sentence():
    passages = {1: "The lab safety officer is Dr. Bogdan Arkwright."}
    verdict = check_answer("The lab safety officer is Dr. Bogdan Arkwright. [1]", passages)
    assert verdict.grounded and verdict.text.endswith("Arkwright. [1]")


def test_a_claim_with_only_a_number_is_never_supported():
    verdict = check("The answer is: 36 [2]", AbstainPolicy.REFUSE)
    assert verdict.text == DECLINE and verdict.citations[2].dropped


def test_abstain_quote_cites_the_closest_passage_sentence_or_refuses():
    verdict = check(
        "The subsidy is 50 EUR. [3]", AbstainPolicy.QUOTE, question="How big is the gym subsidy?"
    )
    assert verdict.quoted and verdict.grounded and verdict.refusal is Refusal.NONE
    assert verdict.text == (
        "Employees receive a gym subsidy of 30 EUR per month, paid with the salary. [3]"
    )
    assert verdict.citations[3].cited and verdict.citations[3].supported
    unrelated = check("Parking is free. [1]", AbstainPolicy.QUOTE, question="Is parking free?")
    assert unrelated.text == DECLINE and unrelated.refusal is Refusal.NOT_SUPPORTED


def test_without_passages_abstaining_reports_no_sources():
    verdict = check_answer("The CEO is Odile Fairbrook.", {}, policy=AbstainPolicy.REFUSE)
    assert verdict.text == DECLINE and verdict.refusal is Refusal.NO_SOURCES
    kept = check_answer("The CEO is Odile Fairbrook.", {})
    assert kept.text == "The CEO is Odile Fairbrook." and kept.refusal is Refusal.NONE


def test_a_marker_that_cites_no_claim_is_removed():
    verdict = check("[2] Laptops are refreshed every 36 months.")
    assert verdict.text == "Laptops are refreshed every 36 months." and not verdict.grounded


def test_sentence_opening_names_are_required_when_the_sources_use_them_as_names():
    passages = ["Our chat tool is Murmur, and video calls use Lantern."]
    names = proper_nouns(passages)
    assert "murmur" in claim("Murmur is the chat tool.", names).required
    assert "laptop" not in claim("Laptops are refreshed.", names).required
    assert {"odile", "fairbrook"} <= claim("Odile Fairbrook leads Acme.", names).required
    chat = {1: passages[0]}
    assert check_answer("Murmur is the chat tool. [1]", chat).grounded
    assert not check_answer("The chat tool is Zephyr. [1]", chat).grounded
    assert not check_answer("Zephyr Talk is the chat tool. [1]", chat).grounded


def test_support_of_two_passages_together_and_scores_in_range():
    both = [Passage(PASSAGES[2]), Passage(PASSAGES[3])]
    fact = claim("The gym subsidy is 30 EUR and laptops last 36 months.")
    assert support(fact, both).supported
    assert not support(fact, both[:1]).supported
    assert 0 <= support(fact, both[:1]).score <= 1


def test_holds_answer_spots_passages_that_state_the_fact():
    assert holds_answer("The gym subsidy is 30 EUR per month.", PASSAGES[3])
    assert not holds_answer("The gym subsidy is 30 EUR per month.", PASSAGES[2])
    assert not holds_answer("Laptops are refreshed every 24 months.", PASSAGES[2])


def test_the_prompt_tells_the_model_the_decline_sentence():
    block = context_block([("Travel", "Travel abroad needs approval.")])
    assert (
        block
        == f"{GROUNDING_INSTRUCTIONS}\n\nSources:\n[1] (Travel) Travel abroad needs approval.\n"
    )
    assert DECLINE in GROUNDING_INSTRUCTIONS


def test_an_unfilled_template_slot_is_never_supported():
    passages = {1: "The company motto is: build it, break it, own it. The company name is Acme."}
    answer = "[Company motto] [Company name] [Company name] [1]"
    asked = "remind me of our company motto?"
    assert claim(answer).says_nothing
    verdict = check_answer(answer, passages, question=asked, policy=AbstainPolicy.REFUSE)
    assert verdict.text == DECLINE and verdict.refusal is Refusal.NOT_SUPPORTED
    assert not claim("The motto is build it, break it, own it. [1]").says_nothing


def test_an_answer_that_only_repeats_the_question_says_nothing():
    passages = {1: "Travel abroad must be approved by your Regional Director using form TR-7."}
    asked = "Who approves travel abroad?"
    echo = check_answer("Travel abroad approves. [1]", passages, question=asked)
    assert not echo.grounded and echo.citations[1].dropped
    answer = "Your Regional Director approves travel abroad. [1]"
    assert check_answer(answer, passages, question=asked).grounded
    yes = "Yes, travel abroad needs form TR-7. [1]"
    assert check_answer(yes, passages, question="Does travel abroad need form TR-7?").grounded
