"""What inference asks of retrieval: one top_k rule, an optional min_score, a typed filter."""

from __future__ import annotations

import math

import pytest

from loraplex.inference.v1 import inference_service_pb2 as pb
from loraplex.retrieval.v1 import retrieval_service_pb2 as ret_pb
from services.common import inputs
from services.common.errors import InvalidArgument
from services.inference import convert
from services.inference.admission import Admission
from services.inference.gateways import _filter
from services.inference.generation import (
    GenerationRequest,
    GenerationResult,
    InferenceCore,
    RagRequest,
)
from services.inference.records import (
    ChunkSearch,
    MetadataCondition,
    MetadataFilter,
    RetrievedChunk,
    SearchResult,
)
from services.inference.settings import InferenceSettings
from tests.unit.inference.fake_engine import FakeEngine


class Recorder:
    def __init__(self) -> None:
        self.searches: list[ChunkSearch] = []

    async def search(self, tenant: str, search: ChunkSearch) -> SearchResult:
        self.searches.append(search)
        return SearchResult((RetrievedChunk(document_id="a", text="a passage"),), revision=1)


def core(retriever: Recorder) -> InferenceCore:
    settings = InferenceSettings(max_tokens_cap=64, default_max_tokens=8)
    return InferenceCore(settings, FakeEngine(), None, retriever, Admission(8, 4))  # type: ignore[arg-type]


async def generate(core: InferenceCore, rag: RagRequest) -> GenerationResult:
    request = GenerationRequest(prompt="Where?", max_tokens=4, rag=rag)
    items = [item async for item in core.generate("acme", request)]
    assert isinstance(items[-1], GenerationResult)
    return items[-1]


async def test_unset_top_k_and_min_score_reach_retrieval_as_the_suite_default_and_unset():
    retriever = Recorder()
    only = MetadataFilter((MetadataCondition("topic", ("refunds",)),))
    await generate(core(retriever), RagRequest(collection="docs", filter=only))
    (search,) = retriever.searches
    assert search.top_k == inputs.DEFAULT_TOP_K
    assert search.min_score is None  # "unset keeps all" now applies
    assert search.filter == only


@pytest.mark.parametrize(
    ("rag", "message"),
    [
        (RagRequest(collection="docs", min_score=math.nan), "rag.min_score must be a finite"),
        (RagRequest(collection="docs", min_score=math.inf), "rag.min_score must be a finite"),
        (RagRequest(collection="docs", min_score=-math.inf), "rag.min_score must be a finite"),
        (RagRequest(collection="docs", top_k=inputs.MAX_TOP_K + 1), "rag.top_k must be between"),
        (RagRequest(collection="docs", top_k=-1), "rag.top_k must be between"),
    ],
)
async def test_bad_search_settings_are_refused_before_any_work(rag, message):
    retriever = Recorder()
    with pytest.raises(InvalidArgument, match=message):
        await generate(core(retriever), rag)
    assert retriever.searches == []


def test_the_filter_is_a_record_inside_and_protobuf_only_at_the_edges():
    message = ret_pb.MetadataFilter()
    message.conditions.add(key="topic", equals="refunds")
    getattr(message.conditions.add(key="lang"), "in").values.extend(["en", "fr"])
    spec = pb.GenerationInput(
        prompt="q", rag=pb.RagOptions(collection="docs", filter=message, min_score=0.0)
    )
    rag = convert.generation_request(spec).rag
    assert rag is not None
    assert rag.filter == MetadataFilter(
        (MetadataCondition("topic", ("refunds",)), MetadataCondition("lang", ("en", "fr")))
    )
    assert rag.min_score == 0.0  # sent explicitly: kept, not confused with unset
    assert _filter(rag.filter) == message  # and back, for retrieval, at the gateway
    unset = convert.generation_request(
        pb.GenerationInput(prompt="q", rag=pb.RagOptions(collection="d"))
    )
    assert unset.rag is not None and unset.rag.min_score is None and unset.rag.filter is None
