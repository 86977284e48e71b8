"""Reference rows every configuration is shown beside; neither runs a model.

* `extractive`: the retrieved sentence with the most content words in common with the
  question, cut to 25 words and citing its passage. It never declines. What a model
  must beat to be worth running: "copy the closest sentence" already looks fluent,
  cited and on topic.
* `always_abstain`: "The sources do not say." for every question. It wins every
  unanswerable question and nothing else.

The extractive answer gets the grounding score and flag of the service's own check
(`loraplex.eval.recheck.judged`), so model and no-model rows are judged by one rule.
"""

from __future__ import annotations

from loraplex.eval.scoring import Answer, Passage
from loraplex.eval.text import MAX_STYLE_WORDS, normalize, sentences

ABSTAIN_TEXT = "The sources do not say."
_STOPWORD_TEXT = (
    "a an the and or of to in on at for by with from is are was were be been do does did i"
    " me my we our you your it its this that what which who whom when where why how can may"
    " must should would could will shall if as than then there their them they he she his her"
    " about into over under any some much many long often get got have has had not no so"
    " acme"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def content_words(text: str) -> set[str]:
    return {t for t in normalize(text).split() if t not in _STOPWORDS}


def extractive(question: str, passages: tuple[Passage, ...] | list[Passage]) -> Answer:
    """The best-overlapping sentence of the given passages (ties: the higher-ranked one)."""
    wanted = content_words(question)
    best: tuple[int, str, Passage] | None = None
    for passage in passages:
        for sentence in sentences(passage.text):
            overlap = len(wanted & content_words(sentence))
            if best is None or overlap > best[0]:
                best = (overlap, sentence, passage)
    if best is None:
        return Answer(text=ABSTAIN_TEXT, refusal_reason="NO_SOURCES")
    _, sentence, passage = best
    words = sentence.split()
    text = " ".join(words[:MAX_STYLE_WORDS]).rstrip(".,;:!?")
    cited = Passage(passage.number, passage.text, True, passage.document_id)
    others = tuple(
        Passage(p.number, p.text, False, p.document_id) for p in passages if p is not passage
    )
    return Answer(text=f"{text}. [{passage.number}]", passages=(cited, *others))


def always_abstain() -> Answer:
    return Answer(text=ABSTAIN_TEXT)
