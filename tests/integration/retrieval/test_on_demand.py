"""Indexes load on first use and unload past the memory budget, answering the same."""

from __future__ import annotations

import logging
import time

import pytest

from services.retrieval.snapshots import SnapshotStore
from tests.integration.retrieval.conftest import make_settings, serve
from tests.integration.retrieval.helpers import create, doc, search, upsert

pytestmark = pytest.mark.integration

TOPICS = {
    "boilers": "The boiler in building {i} lost pressure and was restarted.",
    "invoices": "Invoice {i} was paid thirty days after the shipment arrived.",
    "badges": "Visitor badge {i} must be returned at the front desk.",
}


async def test_collections_load_on_first_use_and_unload_past_the_budget(tmp_path, embedder):
    # A budget of one byte: only the collection used last stays loaded.
    settings = make_settings(tmp_path, memory_budget_bytes=1, snapshot_every_writes=1000)
    async with serve(settings, embedder) as served:
        for name, text in TOPICS.items():
            await create(served.stub, name)
            docs = [doc(f"{name}-{i}", text.format(i=i)) for i in range(3)]
            await upsert(served.stub, name, [docs])
        for _ in range(2):  # each search reloads its collection, from its unload snapshot
            for name, text in TOPICS.items():
                hits = await search(served.stub, name, text.format(i=1), top_k=3)
                assert {c.document_id for c in hits.chunks} == {f"{name}-{i}" for i in range(3)}
                assert hits.chunks[0].document_id == f"{name}-1"
        await served.app.manager.wait_idle()
        assert len(served.app.manager.cache) == 1
        objects = served.app.blobs.list("collections/")
        assert len(objects) == 3  # written at unload, one per collection

    async with serve(make_settings(tmp_path), embedder) as served:
        assert len(served.app.manager.cache) == 0  # nothing is loaded at start
        hits = await search(served.stub, "invoices", "invoice paid", top_k=3)
        assert len(hits.chunks) == 3 and hits.revision == 1
        assert len(served.app.manager.cache) == 1


async def test_a_load_while_the_collection_unloads_reads_its_snapshot(
    tmp_path, embedder, monkeypatch, caplog
):
    """A search that comes back while its collection's unload snapshot is still being
    written waits for that snapshot, instead of rebuilding the index from the rows (at
    1M chunks, a rebuild is half an hour of HNSW)."""
    real_save = SnapshotStore.save

    def slow_save(self, pk, index):  # type: ignore[no-untyped-def]
        time.sleep(1.0)  # on the manager's executor, as every save
        return real_save(self, pk, index)

    monkeypatch.setattr(SnapshotStore, "save", slow_save)
    settings = make_settings(tmp_path, memory_budget_bytes=1, snapshot_every_writes=1000)
    first, second = list(TOPICS)[:2]
    async with serve(settings, embedder) as served:
        for name in (first, second):  # loading the second unloads the first
            await create(served.stub, name)
            await upsert(
                served.stub,
                name,
                [[doc(f"{name}-{i}", TOPICS[name].format(i=i)) for i in range(3)]],
            )
        caplog.clear()
        caplog.set_level(logging.INFO, logger="services.retrieval.live")
        hits = await search(served.stub, first, TOPICS[first].format(i=1), top_k=3)
        assert hits.chunks[0].document_id == f"{first}-1"
        loads = [r.getMessage() for r in caplog.records if r.name == "services.retrieval.live"]
        assert any(f"{first}: snapshot at revision" in m for m in loads), loads
        assert not any("built from" in m for m in loads), loads
        await served.app.manager.wait_idle()
