"""A loaded collection's in-memory state, and how it is loaded and kept level with the store.

The index mirrors the database. It is loaded from the newest snapshot plus the
writes it lacks, a write made here is applied when it follows the index's revision
directly, and anything else (a write made by another replica, a reload racing a
write) is reconciled by comparing the index's chunk ids with the store's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading

import numpy as np

from services.retrieval.bm25 import Bm25Index
from services.retrieval.index import IndexParams, VectorIndex
from services.retrieval.records import CollectionRecord, WriteResult
from services.retrieval.snapshots import SnapshotStore
from services.retrieval.store import RetrievalStore

log = logging.getLogger(__name__)


class LiveCollection:
    """Record, vector index, cached BM25 index and the lock that orders writes."""

    def __init__(
        self, record: CollectionRecord, index: VectorIndex, snapshot_revision: int = -1
    ) -> None:
        self.record = record
        self.index = index
        #: Revision the newest snapshot holds (-1: none), so unsaved writes get snapshotted.
        self.snapshot_revision = snapshot_revision
        self.write_lock = asyncio.Lock()
        self.bm25: Bm25Index | None = None
        self.bm25_lock = threading.Lock()
        self.deleted = False
        self.rebuilding = False

    @property
    def key(self) -> tuple[str, str]:
        return self.record.tenant, self.record.name

    def memory_bytes(self) -> int:
        bm25 = self.bm25.memory_bytes() if self.bm25 is not None else 0
        return self.index.memory_bytes() + bm25

    def apply(self, store: RetrievalStore, result: WriteResult) -> None:
        """Mirrors a committed write (called under the write lock): applied directly when
        it is the next revision, else the index first catches up with the store."""
        if result.revision == self.index.revision + 1:
            self.index.apply(
                result.revision, result.added_ids, result.added_vectors, result.removed_ids
            )
        else:
            catch_up(store, self, result.revision)
        self.record = dataclasses.replace(self.record, revision=self.index.revision)

    def snapshot(self, snapshots: SnapshotStore) -> None:
        """Snapshot at the current revision (called under the write lock)."""
        if self.deleted or self.snapshot_revision == self.index.revision:
            return
        size = snapshots.save(self.record.pk, self.index)
        self.snapshot_revision = self.index.revision
        log.debug(
            "snapshot of %s at revision %d: %d bytes", self.record.name, self.index.revision, size
        )

    def bm25_index(self, store: RetrievalStore) -> Bm25Index:
        """The BM25 index for the current revision, built on first use after a write."""
        with self.bm25_lock:
            revision = self.index.revision
            if self.bm25 is None or self.bm25.revision != revision:
                ids, texts = store.texts(self.record.pk)
                self.bm25 = Bm25Index(revision, ids, texts)
            return self.bm25


def catch_up(store: RetrievalStore, live: LiveCollection, revision: int) -> None:
    """Brings the index to the store's rows, at least at `revision` (read before the rows,
    so the revision the index claims never runs ahead of what it holds)."""
    _reconcile(store, live.record, live.index, revision)


def _reconcile(
    store: RetrievalStore, record: CollectionRecord, index: VectorIndex, revision: int
) -> tuple[int, int]:
    """Set difference of chunk ids, store against index: adds what is missing, removes
    what is gone. Also repairs a snapshot written by a process that died mid-way."""
    stored = store.chunk_ids(record.pk)
    indexed = index.live_ids()
    missing = np.setdiff1d(stored, indexed, assume_unique=True)
    stale = np.setdiff1d(indexed, stored, assume_unique=True)
    ids, vectors = store.vectors(record.pk, missing, record.dimension)
    index.apply(revision, ids, vectors, stale)
    return len(ids), len(stale)


def load_collection(
    store: RetrievalStore, snapshots: SnapshotStore, record: CollectionRecord, params: IndexParams
) -> LiveCollection:
    """Newest snapshot plus what it lacks, or a build from every stored chunk."""
    revision = store.revision(record.pk)
    if revision is None:
        from services.common.errors import NotFound

        raise NotFound(f"collection {record.name!r} not found")
    record = dataclasses.replace(record, revision=revision)
    index = snapshots.load(record.pk, params)
    if index is not None and (
        index.kind is not record.index_kind or index.dimension != record.dimension
    ):
        log.warning("snapshot of %s does not match its collection; rebuilding", record.name)
        index = None
    if index is None:
        ids, vectors = store.vectors(record.pk, None, record.dimension)
        index = VectorIndex.build(
            record.index_kind, record.dimension, params, ids, vectors, revision
        )
        log.info("index of %s/%s built from %d stored chunks", record.tenant, record.name, len(ids))
        return LiveCollection(record, index)
    snapshot_revision = index.revision
    added, removed = _reconcile(store, record, index, revision)
    log.info(
        "index of %s/%s: snapshot at revision %d, replayed to %d (+%d chunks, -%d)",
        record.tenant,
        record.name,
        snapshot_revision,
        revision,
        added,
        removed,
    )
    return LiveCollection(record, index, snapshot_revision)
