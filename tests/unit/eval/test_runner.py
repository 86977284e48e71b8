"""The service's GenerationResult as an Answer, and configuration checks before any request."""

from __future__ import annotations

import pytest

from loraplex.eval.questions import Question
from loraplex.eval.runner import EvalConfig, EvalSettings, answer_from_result, run_eval
from loraplex.inference.v1 import inference_service_pb2 as pb
from loraplex.retrieval.v1 import retrieval_service_pb2 as ret_pb


def test_answer_from_result_keeps_passage_text_and_cited_flags():
    result = pb.GenerationResult(
        text=" The Regional Director approves it. [2] ",
        adapter_ref="acme/support@3",
        citations=[
            pb.Citation(number=1, cited=False, document_id="03-expenses", text="Claims ..."),
            pb.Citation(
                number=2, cited=True, document_id="02-travel", text="Travel abroad ...",
                source=ret_pb.Source(title="Business Travel"),
            ),
        ],
    )  # fmt: skip
    answer = answer_from_result(result, rag=True)
    assert answer.text == "The Regional Director approves it. [2]"
    assert [(p.number, p.cited, p.text) for p in answer.passages] == [
        (1, False, "Claims ..."),
        (2, True, "Travel abroad ..."),
    ]
    assert [p.document_id for p in answer.cited] == ["02-travel"]
    assert answer.adapter_ref == "acme/support@3"
    fields = pb.GenerationResult.DESCRIPTOR.fields_by_name
    assert answer.grounded == (False if "grounded" in fields else None)
    assert answer_from_result(result, rag=False).grounded is None


@pytest.mark.parametrize(
    ("configs", "settings", "message"),
    [
        ([EvalConfig("a"), EvalConfig("a")], EvalSettings(collection="h"), "unique"),
        ([EvalConfig("always abstain")], EvalSettings(collection="h"), "reference row"),
        ([EvalConfig("a", rag=True)], EvalSettings(), "needs a collection"),
        ([EvalConfig("a", rag=False, abstain="refuse")], EvalSettings(), "abstain"),
    ],
)
def test_bad_configurations_fail_before_asking(configs, settings, message):
    question = Question("u", "unanswerable", "q?", expect="decline")
    with pytest.raises(ValueError, match=message):
        run_eval(None, [question], configs, settings)  # type: ignore[arg-type]


def test_bad_configurations_include_a_model_row_named_like_another():
    question = Question("u", "unanswerable", "q?", expect="decline")
    configs = [EvalConfig("a", model_row="b"), EvalConfig("b")]
    with pytest.raises(ValueError, match="unique"):
        run_eval(None, [question], configs, EvalSettings(collection="h"))  # type: ignore[arg-type]


def test_parse_model_row_option():
    config = EvalConfig.parse("checked:acme/s@1:rag:abstain=refuse:model=unchecked")
    assert config == EvalConfig("checked", ("acme/s@1",), True, "refuse", "unchecked")
    assert config.model_config() == EvalConfig("unchecked", ("acme/s@1",), True, "off")
    with pytest.raises(ValueError, match="unknown option"):
        EvalConfig.parse("checked:acme/s@1:rag:model=")


class _Served:
    """Answers like the service with abstain=refuse: the model's text kept in generated_text."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def generate(self, **kwargs: object) -> pb.GenerationResult:
        self.calls.append(kwargs)
        return pb.GenerationResult(
            text="The sources do not say.",
            generated_text="Dogs are welcome on Fridays. [1]",
            refusal_reason=pb.REFUSAL_REASON_NOT_SUPPORTED,
            adapter_ref="acme/s@1",
            citations=[pb.Citation(number=1, cited=False, text="Pets are not allowed.")],
        )


def test_model_row_scores_the_models_own_text_from_the_same_requests():
    question = Question("u", "unanswerable", "Can I bring my dog?", expect="decline")
    served = _Served()
    config = EvalConfig("checked", ("acme/s@1",), True, "refuse", "unchecked")
    run = run_eval(served, [question], [config], EvalSettings(collection="h"))  # type: ignore[arg-type]
    assert len(served.calls) == 1 and served.calls[0]["abstain"] == "refuse"
    assert [c.name for c in run.configs] == ["unchecked", "checked"]
    checked, unchecked = run.answers["checked"][0][0], run.answers["unchecked"][0][0]
    assert checked.refused and checked.cited == ()
    assert unchecked.text == "Dogs are welcome on Fridays. [1]" and not unchecked.refused
    assert [p.number for p in unchecked.cited] == [1]
    assert run.seeds["unchecked"] == run.seeds["checked"] == ["acme/s@1"]


def test_model_row_is_compared_with_its_configuration_and_survives_a_rescore():
    import json

    from loraplex.eval.report import summarize, to_json
    from loraplex.eval.runner import load_run

    question = Question("u", "unanswerable", "Can I bring my dog?", expect="decline")
    config = EvalConfig("checked", ("acme/s@1",), True, "refuse", "unchecked")
    run = run_eval(_Served(), [question], [config], EvalSettings(collection="h"))  # type: ignore[arg-type]
    summary = summarize(run)
    pairs = {(d["a"], d["b"], d["metric"]) for d in summary["differences"]}
    assert ("checked", "unchecked", "correct_refusal") in pairs
    again = summarize(load_run(json.loads(to_json(summary)), [question]))
    assert again["configs"] == summary["configs"]
    assert again["differences"] == summary["differences"]
