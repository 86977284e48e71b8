"""A collection's in-memory state, and how it is rebuilt from snapshot plus store on start-up."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from pathlib import Path

import numpy as np

from services.retrieval.bm25 import Bm25Index
from services.retrieval.index import IndexParams, VectorIndex
from services.retrieval.records import CollectionRecord, WriteResult
from services.retrieval.store import RetrievalStore

log = logging.getLogger(__name__)


class LiveCollection:
    """Record, vector index, cached BM25 index and the lock that orders writes."""

    def __init__(
        self,
        record: CollectionRecord,
        index: VectorIndex,
        index_dir: Path,
        snapshot_revision: int = -1,
    ) -> None:
        self.record = record
        self.index = index
        self.snapshot_path = index_dir / f"{record.pk}.npz"
        #: Revision the snapshot on disk holds (-1: none), so replayed writes get snapshotted.
        self.snapshot_revision = snapshot_revision
        self.write_lock = asyncio.Lock()
        self.bm25: Bm25Index | None = None
        self.bm25_lock = threading.Lock()
        self.deleted = False
        self.rebuilding = False

    def apply(self, result: WriteResult) -> None:
        """Mirrors a committed write in the index (called under the write lock)."""
        self.index.apply(
            result.revision, result.added_ids, result.added_vectors, result.removed_ids
        )
        self.record = dataclasses.replace(self.record, revision=result.revision)

    def snapshot(self) -> None:
        """Atomic snapshot at the current revision (called under the write lock)."""
        if self.deleted or self.snapshot_revision == self.index.revision:
            return
        size = self.index.save(self.snapshot_path)
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


def load_index(
    store: RetrievalStore, record: CollectionRecord, index_dir: Path, params: IndexParams
) -> tuple[VectorIndex, int]:
    """Snapshot plus what it lacks (set difference with the store's live chunk ids).

    Comparing id sets rather than trusting revisions alone also repairs a snapshot
    written by an older process that crashed mid-way through anything. Returns the
    index and the revision of the snapshot it started from (-1: none).
    """
    path = index_dir / f"{record.pk}.npz"
    index = VectorIndex.load(path, params)
    if index is not None and (
        index.kind is not record.index_kind or index.dimension != record.dimension
    ):
        log.warning("snapshot of %s does not match its collection; rebuilding", record.name)
        index = None
    if index is None:
        ids, vectors = store.vectors(record.pk, None, record.dimension)
        log.info("index of %s/%s built from %d stored chunks", record.tenant, record.name, len(ids))
        index = VectorIndex.build(
            record.index_kind, record.dimension, params, ids, vectors, record.revision
        )
        return index, -1
    stored = store.chunk_ids(record.pk)
    indexed = index.live_ids()
    missing = np.setdiff1d(stored, indexed, assume_unique=True)
    stale = np.setdiff1d(indexed, stored, assume_unique=True)
    ids, vectors = store.vectors(record.pk, missing, record.dimension)
    snapshot_revision = index.revision
    index.apply(record.revision, ids, vectors, stale)
    log.info(
        "index of %s/%s: snapshot at revision %d, replayed to %d (+%d chunks, -%d)",
        record.tenant,
        record.name,
        snapshot_revision,
        record.revision,
        len(ids),
        len(stale),
    )
    return index, snapshot_revision
