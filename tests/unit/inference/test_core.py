"""InferenceCore over the fake engine: adapters end to end, context budget, citations."""

from __future__ import annotations

from services.common.adapter_ref import parse_ref
from services.inference.admission import Admission
from services.inference.generation import (
    GenerationRequest,
    GenerationResult,
    InferenceCore,
    RagRequest,
)
from services.inference.records import ChunkSearch, RetrievedChunk, SearchResult
from services.inference.settings import InferenceSettings
from tests.unit.inference.fake_engine import FakeEngine


class ListRetriever:
    """Returns fixed chunks, best first, and records the searches asked of it."""

    def __init__(self, chunks: list[RetrievedChunk]) -> None:
        self.chunks = chunks
        self.searches: list[tuple[str, ChunkSearch]] = []

    async def search(self, tenant: str, search: ChunkSearch) -> SearchResult:
        self.searches.append((tenant, search))
        return SearchResult(tuple(self.chunks[: search.top_k]), revision=7)


def chunk(doc: str, words: int) -> RetrievedChunk:
    return RetrievedChunk(document_id=doc, text=" ".join([doc] * words), source_title=doc.upper())


async def run(core: InferenceCore, tenant: str, request: GenerationRequest):
    deltas, result = [], None
    async for item in core.generate(tenant, request):
        if isinstance(item, GenerationResult):
            result = item
        else:
            deltas.append(item)
    return deltas, result


async def test_generation_with_adapter_rag_and_citations(rig):
    await rig.push("acme", "acme/bot")
    engine = FakeEngine(script=["Paris", " [1]", " and", " [3]", "."], max_model_len=200)
    # The fake engine prefixes its adapter's name, which the passage must hold too.
    paris = RetrievedChunk(document_id="a", text="acme bot 1: Paris it is.", source_title="A")
    retriever = ListRetriever([paris, chunk("b", 400), chunk("c", 3)])
    manager = rig.manager()
    rig.engine = engine
    manager.engine = engine
    settings = InferenceSettings(max_tokens_cap=64, default_max_tokens=16)
    core = InferenceCore(settings, engine, manager, retriever, Admission(8, 4))
    request = GenerationRequest(
        adapter=parse_ref("acme/bot"),
        prompt="Where?",
        max_tokens=10,
        rag=RagRequest(collection="docs", top_k=3, max_context_tokens=60),
    )
    deltas, result = await run(core, "acme", request)
    assert result.adapter_ref == "acme/bot@1"
    assert [c.chunk.document_id for c in result.citations] == ["a", "c"]  # b over budget
    # [3] named no source given, so it is dropped from the stream and the text; [1] is
    # supported by its passage, so the checked text keeps it
    assert result.text == "".join(deltas) == "<acme/bot@1>Paris [1] and ."
    assert result.citations[0].supported
    assert [(c.number, c.cited) for c in result.citations] == [(1, True), (2, False)]
    assert result.collection_revision == 7
    tenant, search = retriever.searches[0]
    assert tenant == "acme" and search.query == "Where?" and search.top_k == 3
