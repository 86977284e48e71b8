"""Happy paths and write semantics of the retrieval service over a real loopback server."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from services.retrieval.app import SERVICE_NAME
from tests.integration.retrieval.helpers import ACME, create, doc, equals, search, stats, upsert

pytestmark = pytest.mark.integration

GUIDE = (
    "# Pump maintenance\n\nThe centrifugal pump must be primed with water before the first"
    " start. Check the impeller for debris every three months. Replace the mechanical seal"
    " when you see drips at the shaft."
)


async def test_create_get_list_upsert_search_stats_delete(served):
    stub = served.stub
    health = health_pb2_grpc.HealthStub(served.running.channel)
    ready = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    assert ready.status == health_pb2.HealthCheckResponse.SERVING

    made = await create(stub, "manuals", chunk_size_tokens=24, chunk_overlap_tokens=4)
    assert (made.dimension, made.embedding_model) == (384, "all-MiniLM-L6-v2")
    assert made.index_kind == pb.INDEX_KIND_EXACT and made.revision == 0
    for name in ("b-docs", "a-docs"):
        await create(stub, name)

    progress = await upsert(
        stub,
        "manuals",
        [
            [doc("pump", GUIDE, "file:///pump.md", "Pump maintenance", team="ops")],
            [doc("tea", "Green tea is brewed at 80 degrees for two minutes.", team="kitchen")],
        ],
    )
    final = progress[-1]
    assert final.done and final.documents_written == 2 and final.revision == 2
    assert final.chunks_embedded == final.chunks_total > 2  # the guide spans several chunks
    assert any(p.chunks_embedded < p.chunks_total for p in progress)  # progress was streamed

    found = await search(stub, "manuals", "how often should I inspect the impeller?", top_k=3)
    top = found.chunks[0]
    assert top.document_id == "pump" and "impeller" in top.text
    assert GUIDE[top.start_char : top.end_char] == top.text
    assert top.metadata == {"team": "ops"}
    assert (top.source.uri, top.source.title) == ("file:///pump.md", "Pump maintenance")
    assert found.revision == 2 and all(c.score <= top.score for c in found.chunks)

    strict = await search(stub, "manuals", "brewing green tea", top_k=10, min_score=0.5)
    assert [c.document_id for c in strict.chunks] == ["tea"]

    got = await stub.GetCollection(pb.GetCollectionRequest(name="manuals"), metadata=ACME)
    assert got.collection.revision == 2 and got.collection.chunk_size_tokens == 24

    page = await stub.ListCollections(pb.ListCollectionsRequest(page_size=2), metadata=ACME)
    assert [c.name for c in page.collections] == ["a-docs", "b-docs"] and page.next_page_token
    rest = await stub.ListCollections(
        pb.ListCollectionsRequest(page_size=2, page_token=page.next_page_token), metadata=ACME
    )
    assert [c.name for c in rest.collections] == ["manuals"] and not rest.next_page_token

    numbers = await stats(stub, "manuals")
    assert numbers.documents == 2 and numbers.chunks == final.chunks_total
    assert numbers.bytes_on_disk > numbers.chunks * 384 * 4 and numbers.revision == 2

    await stub.DeleteCollection(pb.DeleteCollectionRequest(name="manuals"), metadata=ACME)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stats(stub, "manuals")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reupsert_replaces_all_old_chunks_and_deletes_by_id_and_filter(served):
    stub = served.stub
    await create(stub, "kb", chunk_size_tokens=16, chunk_overlap_tokens=2)
    long_text = " ".join(f"Sentence {i} talks about volcanic basalt formations." for i in range(12))
    await upsert(stub, "kb", [[doc("geo", long_text, lang="en")]])
    before = await stats(stub, "kb")
    assert before.chunks > 5

    replaced = await upsert(
        stub, "kb", [[doc("geo", "Glaciers carve U-shaped valleys.", lang="fr")]]
    )
    assert replaced[-1].documents_written == 1
    after = await stats(stub, "kb")
    assert (after.documents, after.chunks) == (1, 1)
    hits = await search(stub, "kb", "volcanic basalt", top_k=10)
    assert [(c.text, c.metadata["lang"]) for c in hits.chunks] == [
        ("Glaciers carve U-shaped valleys.", "fr")
    ]

    await upsert(
        stub,
        "kb",
        [[doc(f"d{i}", f"Note number {i} about rivers.", tier=str(i % 3)) for i in range(9)]],
    )
    by_id = await stub.DeleteDocuments(
        pb.DeleteDocumentsRequest(collection="kb", document_ids=["d0", "d1", "missing"]),
        metadata=ACME,
    )
    assert by_id.documents_deleted == 2
    by_filter = await stub.DeleteDocuments(
        pb.DeleteDocumentsRequest(
            collection="kb", filter=pb.MetadataFilter(conditions=[equals("tier", "2")])
        ),
        metadata=ACME,
    )
    assert by_filter.documents_deleted == 3 and by_filter.revision > by_id.revision
    left = await search(stub, "kb", "rivers", top_k=20)
    assert sorted(c.document_id for c in left.chunks if c.document_id.startswith("d")) == [
        "d3",
        "d4",
        "d6",
        "d7",
    ]
    assert (await stats(stub, "kb")).documents == 5


async def test_concurrent_upserts_and_searches_stay_consistent(served):
    stub = served.stub
    await create(stub, "busy", index_kind=pb.INDEX_KIND_HNSW)

    async def writer(prefix: str) -> None:
        for batch in range(4):
            docs = [doc(f"{prefix}{batch}-{i}", f"{prefix} log line {batch} {i}") for i in range(5)]
            await upsert(stub, "busy", [docs])

    async def reader() -> int:
        served_searches = 0
        for _ in range(10):
            found = await search(stub, "busy", "log line", top_k=5)
            assert len({c.document_id for c in found.chunks}) == len(found.chunks)
            served_searches += 1
        return served_searches

    results = await asyncio.gather(writer("a"), writer("b"), reader())
    assert results[2] == 10
    numbers = await stats(stub, "busy")
    assert (numbers.documents, numbers.chunks, numbers.revision) == (40, 40, 8)
    index = served.app.manager.cache.get(("acme", "busy")).index
    assert index.ntotal == 40 and index.revision == 8
