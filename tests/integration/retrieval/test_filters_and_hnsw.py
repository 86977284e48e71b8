"""Filters are applied inside the search; HNSW deletes become tombstones until a rebuild."""

from __future__ import annotations

import pytest

from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from tests.integration.retrieval.conftest import make_settings, serve
from tests.integration.retrieval.helpers import ACME, create, doc, equals, one_of, search, stats
from tests.integration.retrieval.helpers import upsert as upsert_docs

pytestmark = pytest.mark.integration

TOPICS = ["solar panels", "wind turbines", "battery storage", "heat pumps"]


def _corpus() -> list[pb.Document]:
    """200 one-chunk documents; only 3 are region=north, and they are off-topic for the query."""
    docs = [
        doc(f"energy-{i}", f"Report {i} on {TOPICS[i % 4]} and grid energy prices.", region="south")
        for i in range(197)
    ]
    docs += [
        doc(
            f"north-{i}", f"Recipe {i}: bake the sourdough bread for forty minutes.", region="north"
        )
        for i in range(3)
    ]
    return docs


@pytest.mark.parametrize(
    ("kind", "exact_threshold"),
    [(pb.INDEX_KIND_EXACT, 4096), (pb.INDEX_KIND_HNSW, 4096), (pb.INDEX_KIND_HNSW, 0)],
    ids=["exact", "hnsw-small-subset", "hnsw-selector"],
)
async def test_filter_returns_all_matches_even_when_they_rank_last(
    tmp_path, embedder, kind, exact_threshold
):
    settings = make_settings(tmp_path, exact_filter_threshold=exact_threshold)
    async with serve(settings, embedder) as served:
        stub = served.stub
        await create(stub, "energy", index_kind=kind)
        corpus = _corpus()
        await upsert_docs(stub, "energy", [corpus[i : i + 100] for i in range(0, 200, 100)])
        query = "grid energy prices for solar panels"

        unfiltered = await search(stub, "energy", query, top_k=5)
        assert all(c.metadata["region"] == "south" for c in unfiltered.chunks)

        north = pb.MetadataFilter(conditions=[equals("region", "north")])
        hits = await search(stub, "energy", query, top_k=5, filter=north)
        assert sorted(c.document_id for c in hits.chunks) == ["north-0", "north-1", "north-2"]

        picked = pb.MetadataFilter(conditions=[one_of("region", "north", "east")])
        hybrid = await search(
            stub, "energy", query, top_k=5, filter=picked, mode=pb.SEARCH_MODE_HYBRID
        )
        assert sorted(c.document_id for c in hybrid.chunks) == ["north-0", "north-1", "north-2"]

        nothing = pb.MetadataFilter(conditions=[equals("region", "north"), equals("x", "y")])
        assert (await search(stub, "energy", query, filter=nothing)).chunks == []


async def test_hnsw_tombstones_hide_deleted_chunks_until_rebuild_drops_them(tmp_path, embedder):
    settings = make_settings(tmp_path, rebuild_min_tombstones=10, rebuild_tombstone_ratio=0.3)
    async with serve(settings, embedder) as served:
        stub = served.stub
        await create(stub, "h", index_kind=pb.INDEX_KIND_HNSW)
        docs = [doc(f"d{i}", f"Ticket {i}: the printer on floor {i} is jammed.") for i in range(30)]
        await upsert_docs(stub, "h", [docs])

        # Replacing 4 documents tombstones their old vectors; below the threshold: no rebuild.
        await upsert_docs(
            stub, "h", [[doc(f"d{i}", f"Ticket {i}: coffee machine leaks.") for i in range(4)]]
        )
        numbers = await stats(stub, "h")
        assert (numbers.documents, numbers.chunks, numbers.tombstones) == (30, 30, 4)
        hits = await search(stub, "h", "printer jammed", top_k=30)
        # Every live document once, replaced ones only with their new text: no stale vectors.
        assert sorted(c.document_id for c in hits.chunks) == sorted(f"d{i}" for i in range(30))
        assert all(
            ("coffee" in c.text) == (c.document_id in {"d0", "d1", "d2", "d3"}) for c in hits.chunks
        )
        snapshot_before = served.app.manager.cache.get(("acme", "h")).index

        deleted = await stub.DeleteDocuments(
            pb.DeleteDocumentsRequest(collection="h", document_ids=[f"d{i}" for i in range(4, 12)]),
            metadata=ACME,
        )
        assert deleted.documents_deleted == 8
        # 12 tombstones over 38 vectors crosses both thresholds: a rebuild runs in the background.
        await served.app.manager.wait_idle()
        rebuilt = await stats(stub, "h")
        assert (rebuilt.chunks, rebuilt.tombstones) == (22, 0)
        live = served.app.manager.cache.get(("acme", "h")).index
        assert live is not snapshot_before and live.ntotal == 22
        hits = await search(stub, "h", "printer jammed", top_k=30)
        expected = [f"d{i}" for i in (0, 1, 2, 3, *range(12, 30))]
        assert sorted(c.document_id for c in hits.chunks) == sorted(expected)
        coffee = await search(stub, "h", "coffee machine", top_k=4)
        assert {c.document_id for c in coffee.chunks} == {"d0", "d1", "d2", "d3"}
