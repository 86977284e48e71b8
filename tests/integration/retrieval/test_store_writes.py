"""The store's batched write path on SQLite and on a real PostgreSQL (where chunk and
document rows go in by COPY with ids drawn from the tables' sequences).

Pass: one write call is one transaction (a failing batch leaves nothing behind), new
chunk ids come back in the order of the chunks and increase across calls, each stored
row carries its own document, metadata and vector, replacing a document retires its
old ids for good, and concurrent writers to two collections never share an id.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from services.common.db import make_engine, sqlite_url
from services.retrieval.chunking import Chunk
from services.retrieval.records import (
    CollectionRecord,
    Condition,
    DocumentInput,
    IndexKind,
    PreparedDocument,
)
from services.retrieval.store import RetrievalStore
from tests.postgres import create_database, postgres_bin, postgres_server

pytestmark = pytest.mark.integration
DIM = 8


@pytest.fixture(scope="module")
def server() -> Iterator[str | None]:
    if postgres_bin() is None:
        yield None
        return
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, server: str | None, tmp_path: Path) -> RetrievalStore:
    if request.param == "sqlite":
        return RetrievalStore(make_engine(sqlite_url(tmp_path / "retrieval.db")))
    if server is None:
        pytest.skip("no PostgreSQL server installed")
    return RetrievalStore(make_engine(create_database(server)))


def _collection(store: RetrievalStore, name: str) -> CollectionRecord:
    record = CollectionRecord(
        0, "acme", name, "m", DIM, IndexKind.EXACT, 32, 4, datetime.now(UTC), 0
    )
    return store.create_collection(record, max_per_tenant=10)


def _doc(doc_id: str, n_chunks: int, seed: int, **metadata: str) -> PreparedDocument:
    vectors = np.random.default_rng(seed).standard_normal((n_chunks, DIM)).astype(np.float32)
    chunks = [Chunk(i, f"{doc_id} part {i}", i * 10, i * 10 + 9) for i in range(n_chunks)]
    return PreparedDocument(
        DocumentInput(doc_id, "text", metadata, f"file://{doc_id}", doc_id.upper()),
        chunks,
        vectors,
    )


def test_a_batch_lands_in_order_with_its_documents_metadata_and_vectors(store):
    record = _collection(store, "notes")
    batch = [_doc("a", 3, 1, team="red"), _doc("b", 1, 2), _doc("c", 2, 3, team="blue", y="1")]
    first = store.write_documents(record, batch)
    assert first.documents == 3 and first.revision == 1
    assert len(first.added_ids) == 6 and np.all(np.diff(first.added_ids) > 0)
    ids, vectors = store.vectors(record.pk, first.added_ids, DIM)
    assert np.array_equal(ids, first.added_ids)
    assert np.array_equal(vectors, np.vstack([d.vectors for d in batch]))
    assert np.array_equal(first.added_vectors, vectors)
    hits = store.hydrate(record.pk, first.added_ids.tolist())
    expected = [(d.doc.doc_id, c) for d in batch for c in d.chunks]
    for chunk_id, (doc_id, chunk) in zip(first.added_ids.tolist(), expected, strict=True):
        hit = hits[chunk_id]
        assert (hit.document_id, hit.chunk_index, hit.text) == (doc_id, chunk.index, chunk.text)
        assert (hit.start_char, hit.end_char) == (chunk.start_char, chunk.end_char)
        assert hit.source_uri == f"file://{doc_id}" and hit.source_title == doc_id.upper()
    assert hits[int(first.added_ids[-1])].metadata == {"team": "blue", "y": "1"}
    red = store.chunk_ids(record.pk, [Condition("team", ["red"])])
    assert np.array_equal(red, first.added_ids[:3])

    # Replacing b retires its id for good; the new ids come after every earlier one.
    second = store.write_documents(record, [_doc("b", 2, 4), _doc("d", 1, 5)])
    assert second.revision == 2 and second.added_ids.min() > first.added_ids.max()
    assert second.removed_ids.tolist() == [int(first.added_ids[3])]
    assert store.counts(record.pk)[:2] == (4, 8)


def test_a_failing_batch_leaves_nothing_behind(store):
    record = _collection(store, "notes")
    store.write_documents(record, [_doc("a", 2, 1, team="red")])
    before = store.chunk_ids(record.pk)
    # The same id twice in one call (the service rejects it earlier) fails at commit.
    with pytest.raises(Exception):  # noqa: B017 (the driver's own unique-violation type)
        store.write_documents(record, [_doc("a", 1, 2), _doc("x", 2, 3), _doc("x", 1, 4)])
    assert store.revision(record.pk) == 1
    assert np.array_equal(store.chunk_ids(record.pk), before)
    assert store.counts(record.pk)[:2] == (1, 2)
    assert np.array_equal(store.chunk_ids(record.pk, [Condition("team", ["red"])]), before)


def test_concurrent_writers_to_two_collections_never_share_an_id(store):
    records = [_collection(store, "left"), _collection(store, "right")]

    def write(k: int) -> np.ndarray:
        record = records[k % 2]
        docs = [_doc(f"d{k}-{j}", 1 + j % 3, k * 100 + j) for j in range(20)]
        return store.write_documents(record, docs).added_ids

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(write, range(8)))
    everything = np.concatenate(results)
    assert len(np.unique(everything)) == len(everything) == 8 * sum(1 + j % 3 for j in range(20))
    for k, ids in enumerate(results):
        assert np.all(np.diff(ids) > 0)
        stored, _ = store.vectors(records[k % 2].pk, ids, DIM)
        assert np.array_equal(stored, ids)
