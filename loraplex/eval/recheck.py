"""The service's grounding check applied again to the model's own text, offline.

The check (`services.inference.grounding.check_answer`) is a pure function of the
generated text, the passages the model was given, the question and the thresholds, and
every answer the evaluation stores carries all of them. So the abstain policies can be
compared on one set of generations (`refuse=ROW`, `off=ROW`, `quote=ROW` rows of a
configuration), and stored answers can be judged again by the current check
(`loraplex eval --rescore FILE --recheck`) without a model. The relevance half uses the
retrieval embedder when sentence-transformers is installed, as the service does.

The service modules are imported lazily: the check is text functions, no gRPC, no engine.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Any

from loraplex.eval.questions import Question
from loraplex.eval.scoring import Answer, Passage
from loraplex.eval.text import cited_markers

_REFUSALS = {
    "none": "",
    "model_declined": "REFUSAL_REASON_MODEL_DECLINED",
    "not_supported": "REFUSAL_REASON_NOT_SUPPORTED",
    "no_sources": "REFUSAL_REASON_NO_SOURCES",
}


@cache
def _similarity() -> Any:
    """The service's embedder, or None where sentence-transformers is not installed."""
    try:
        from services.inference.similarity import SentenceSimilarity

        return SentenceSimilarity()
    except (ImportError, RuntimeError):
        return None


def defaults() -> tuple[float, float]:
    """The service's default grounded and abstain thresholds."""
    from services.inference.relevance import DEFAULT_ABSTAIN_THRESHOLD, DEFAULT_THRESHOLD

    return DEFAULT_THRESHOLD, DEFAULT_ABSTAIN_THRESHOLD


def recheck(
    question: Question,
    answer: Answer,
    policy: str,
    threshold: float | None = None,
    abstain_below: float | None = None,
) -> Answer:
    """What the service serves for the model's text of `answer` under `policy`; the
    thresholds default to those `answer` was served with, then to the service's."""
    from services.inference.grounding import AbstainPolicy, check_answer

    if not answer.passages and "generated_text" not in answer.extra:
        return answer  # no RAG: nothing was checked
    grounded_default, abstain_default = defaults()
    if threshold is None:
        threshold = answer.extra.get("grounded_threshold", grounded_default)
    if abstain_below is None:
        abstain_below = answer.extra.get("abstain_threshold", abstain_default)
    text = answer.extra.get("generated_text", answer.text)
    verdict = check_answer(
        text,
        {p.number: p.text for p in answer.passages},
        question=question.question,
        policy=AbstainPolicy(policy),
        threshold=threshold,
        abstain_below=abstain_below,
        similarity=_similarity(),
    )
    cited = cited_markers(verdict.text)
    checks = verdict.citations
    passages = tuple(
        Passage(
            p.number, p.text, p.number in cited, p.document_id,
            checks[p.number].support if p.number in checks else None,
            checks[p.number].dropped if p.number in checks else False,
        )
        for p in answer.passages
    )  # fmt: skip
    extra = {
        "generated_text": text,
        "grounding_score": verdict.score,
        "grounded_threshold": threshold,
        "abstain_threshold": abstain_below,
        "checked_text": verdict.checked_text,
        "checked_score": verdict.checked_score,
    }
    if verdict.quoted:
        extra["quoted"] = True
    return Answer(
        verdict.text,
        passages,
        _REFUSALS[verdict.refusal.value],
        verdict.grounded,
        answer.adapter_ref,
        extra=extra,
    )


def judged(question: str, answer: Answer, threshold: float | None) -> Answer:
    """A reference answer with the service's grounding score and flag (policy OFF: the
    text stays as it is), at the threshold the model rows were served with."""
    from services.inference.grounding import check_answer

    if threshold is None:
        threshold = defaults()[0]
    passages = {p.number: p.text for p in answer.passages}
    verdict = check_answer(
        answer.text, passages, question=question, threshold=threshold, similarity=_similarity()
    )
    extra = {**answer.extra, "grounding_score": verdict.score, "grounded_threshold": threshold}
    return replace(answer, grounded=verdict.grounded, extra=extra)
