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
