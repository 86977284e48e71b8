"""FAISS index behaviour, snapshots, and start-up replay from a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.common.blob_local import LocalBlobStore
from services.common.db import make_engine
from services.common.errors import AlreadyExists, NotFound
from services.retrieval.chunking import Chunk
from services.retrieval.index import IndexParams, VectorIndex
from services.retrieval.live import load_collection
from services.retrieval.records import (
    CollectionRecord,
    Condition,
    DocumentInput,
    IndexKind,
    PreparedDocument,
)
from services.retrieval.snapshots import SnapshotStore
from services.retrieval.store import RetrievalStore

DIM = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", list(IndexKind))
def test_remove_filter_and_snapshot_round_trip(kind, tmp_path):
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 500)
    ids = np.arange(1000, 1500, dtype=np.int64)
    index = VectorIndex.build(kind, DIM, IndexParams(hnsw_m=16), ids, vectors, revision=3)
    _, top = index.search(vectors[7], 1)
    assert top.tolist() == [1007]

    index.apply(4, np.zeros(0, np.int64), np.zeros((0, DIM)), np.array([1007]))
    _, top = index.search(vectors[7], 5)
    assert 1007 not in top.tolist() and len(top) == 5
    assert index.tombstones == (1 if kind is IndexKind.HNSW else 0)
    assert len(index.live_ids()) == 499

    allowed = np.array([1003, 1007, 1400])
    _, top = index.search(vectors[7], 10, allowed)
    assert sorted(top.tolist()) == [1003, 1400]

    loaded = VectorIndex.from_bytes(index.to_bytes(), IndexParams())
    assert loaded is not None and (loaded.kind, loaded.revision) == (kind, 4)
    assert loaded.tombstones == index.tombstones
    assert loaded.search(vectors[9], 3)[1].tolist() == index.search(vectors[9], 3)[1].tolist()

    assert VectorIndex.from_bytes(b"garbage", IndexParams()) is None


def test_hnsw_rebuild_threshold():
    rng = np.random.default_rng(1)
    index = VectorIndex.build(
        IndexKind.HNSW, DIM, IndexParams(), np.arange(100), _unit(rng, 100), 1
    )
    index.remove(np.arange(10))
    assert not index.needs_rebuild(0.2, 5)
    index.remove(np.arange(10, 20))
    assert index.needs_rebuild(0.2, 5) and not index.needs_rebuild(0.2, 50)


def _prepared(doc_id: str, vectors: np.ndarray, **metadata: str) -> PreparedDocument:
    chunks = [Chunk(i, f"{doc_id} part {i}", 0, 1) for i in range(len(vectors))]
    return PreparedDocument(DocumentInput(doc_id, "x", metadata), chunks, vectors)


def test_store_is_tenant_scoped_and_replay_brings_a_stale_snapshot_up_to_date(tmp_path):
    store = RetrievalStore(make_engine(f"sqlite:///{tmp_path / 'r.db'}"))
    snapshots = SnapshotStore(LocalBlobStore(tmp_path / "blobs"), store)
    record = CollectionRecord(0, "acme", "c", "m", DIM, IndexKind.HNSW, 32, 4, datetime.now(UTC), 0)
    record = store.create_collection(record, max_per_tenant=5)
    with pytest.raises(AlreadyExists):
        store.create_collection(record, max_per_tenant=5)
    with pytest.raises(NotFound):
        store.get_collection("globex", "c")
    assert store.list_collections("globex", "", 10) == []

    rng = np.random.default_rng(2)
    params = IndexParams()
    index = VectorIndex(IndexKind.HNSW, DIM, params)
    first = store.write_documents(record, [_prepared("a", _unit(rng, 3), k="1")])
    second = store.write_documents(record, [_prepared("b", _unit(rng, 2), k="2")])
    for result in (first, second):
        index.apply(result.revision, result.added_ids, result.added_vectors, result.removed_ids)
    snapshots.save(record.pk, index)  # snapshot at revision 2

    # Writes after the snapshot: replace "a", delete "b", add "c".
    third = store.write_documents(record, [_prepared("a", _unit(rng, 1), k="1")])
    assert len(third.removed_ids) == 3 and len(third.added_ids) == 1
    store.delete_documents(record, ["b"], [])
    last = store.write_documents(record, [_prepared("c", _unit(rng, 2), k="3")])
    record = store.get_collection("acme", "c")
    assert record.revision == last.revision == 5

    live = load_collection(store, snapshots, record, params)
    replayed = live.index
    assert (live.snapshot_revision, replayed.revision) == (2, 5)
    assert sorted(replayed.live_ids().tolist()) == sorted(store.chunk_ids(record.pk).tolist())
    assert store.chunk_ids(record.pk, [Condition("k", ("1", "3"))]).tolist() == sorted(
        [*third.added_ids.tolist(), *last.added_ids.tolist()]
    )
    ids, vectors = store.vectors(record.pk, last.added_ids, DIM)
    assert ids.tolist() == last.added_ids.tolist() and np.allclose(vectors, last.added_vectors)


def test_saving_the_recorded_revision_again_keeps_its_snapshot(tmp_path):
    """Two loads of one collection (one unloading while a search loaded it again) both
    snapshot the same revision: the second save must not delete the recorded object."""
    store = RetrievalStore(make_engine(f"sqlite:///{tmp_path / 'r.db'}"))
    snapshots = SnapshotStore(LocalBlobStore(tmp_path / "blobs"), store)
    record = CollectionRecord(
        0, "acme", "c", "m", DIM, IndexKind.EXACT, 32, 4, datetime.now(UTC), 0
    )
    record = store.create_collection(record, max_per_tenant=5)
    result = store.write_documents(record, [_prepared("a", _unit(np.random.default_rng(3), 3))])
    params = IndexParams()
    for _ in range(2):
        index = VectorIndex(IndexKind.EXACT, DIM, params)
        index.apply(result.revision, result.added_ids, result.added_vectors, result.removed_ids)
        snapshots.save(record.pk, index)
    assert [info.key for info in snapshots.blobs.list("collections/")] == [
        f"collections/{record.pk}/{result.revision}.npz"
    ]
    loaded = snapshots.load(record.pk, params)
    assert loaded is not None and loaded.revision == result.revision
    # An older revision saved late is still refused, and what it wrote is removed.
    stale = VectorIndex(IndexKind.EXACT, DIM, params)
    snapshots.save(record.pk, stale)  # revision 0
    assert [info.key for info in snapshots.blobs.list("collections/")] == [
        f"collections/{record.pk}/{result.revision}.npz"
    ]
