"""Citation checks and abstaining through the real inference service, vLLM and retrieval.

The tiny random model writes noise: no passage supports it, which is exactly the
case abstaining is for. The scores on the wire are the pure check's own.
"""

from __future__ import annotations

import grpc
import pytest

from loraplex.inference.v1 import inference_service_pb2 as pb
from loraplex.retrieval.v1 import retrieval_service_pb2 as ret_pb
from services.common.grounding import DECLINE
from services.common.testing import tenant_metadata
from services.inference.grounding import check_answer
from tests.integration.inference.helpers import generate, request
from tests.integration.inference.test_generation import _ingest

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
ACME = tenant_metadata("acme")
QUESTION = "How many moons does the office cat own?"


async def test_citations_carry_the_checks_support_scores(served):
    await _ingest(served, "acme", "handbook")
    result = await generate(
        served, "acme", prompt=QUESTION, max_tokens=24, collection="handbook", top_k=3
    )
    assert [c.number for c in result.citations] == [1, 2, 3]
    passages = {c.number: c.text for c in result.citations}
    verdict = check_answer(result.generated_text, passages, question=QUESTION)
    assert result.text == verdict.text and result.grounded == verdict.grounded
    for c in result.citations:
        check = verdict.citations[c.number]
        assert c.support == pytest.approx(check.support, abs=1e-6)
        assert (c.supported, c.cited, c.dropped, c.added) == (
            check.supported,
            check.cited,
            check.dropped,
            check.added,
        )
    assert result.refusal_reason == pb.REFUSAL_REASON_UNSPECIFIED


async def test_abstain_refuses_an_answer_no_passage_supports(served):
    await _ingest(served, "acme", "handbook")
    spec = request(prompt=QUESTION, max_tokens=24, collection="handbook", top_k=3).input
    spec.rag.abstain = pb.ABSTAIN_POLICY_REFUSE
    deltas, final = [], None
    async for message in served.stub.StreamGenerateText(
        pb.StreamGenerateTextRequest(input=spec), metadata=ACME, timeout=120
    ):
        if message.HasField("result"):
            final = message.result
        else:
            deltas.append(message.delta)
    assert final is not None and final.generated_text == "".join(deltas) != ""
    assert final.text == DECLINE and not final.grounded
    assert final.refusal_reason == pb.REFUSAL_REASON_NOT_SUPPORTED
    assert len(final.citations) == 3 and not any(c.cited for c in final.citations)
    assert all(0 <= c.support <= 1 for c in final.citations)


async def test_abstain_with_nothing_retrieved_says_so(served):
    await _ingest(served, "acme", "handbook")
    nothing = ret_pb.MetadataFilter(
        conditions=[ret_pb.MetadataCondition(key="section", equals="no-such-section")]
    )
    spec = request(prompt=QUESTION, collection="handbook", filter=nothing).input
    spec.rag.abstain = pb.ABSTAIN_POLICY_QUOTE
    reply = await served.stub.GenerateText(pb.GenerateTextRequest(input=spec), metadata=ACME)
    assert reply.result.text == DECLINE and not reply.result.citations
    assert reply.result.refusal_reason == pb.REFUSAL_REASON_NO_SOURCES


async def test_an_unknown_abstain_policy_is_invalid(served):
    await _ingest(served, "acme", "handbook")
    spec = request(prompt=QUESTION, collection="handbook").input
    spec.rag.abstain = 7
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.GenerateText(pb.GenerateTextRequest(input=spec), metadata=ACME)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "abstain" in err.value.details()
