"""Index snapshots as keyed objects in the kit's `BlobStore` (local files or S3).

Any replica can load any collection: the database names each collection's newest
snapshot (`index_snapshots`), the blob store holds its bytes under
`collections/<pk>/<revision>.npz`. A snapshot is written first and recorded
second, so a recorded key always exists; a superseded one is deleted after the
record moves. Deleting a collection deletes its whole prefix.
"""

from __future__ import annotations

import logging

from services.common.blobstore import BlobMissing, BlobStore
from services.retrieval.index import IndexParams, VectorIndex
from services.retrieval.store import RetrievalStore

log = logging.getLogger(__name__)

PREFIX = "collections/"


def _prefix(pk: int) -> str:
    return f"{PREFIX}{pk}/"


class SnapshotStore:
    """Blocking; the manager calls it from its executor."""

    def __init__(self, blobs: BlobStore, store: RetrievalStore) -> None:
        self.blobs = blobs
        self.store = store

    def save(self, pk: int, index: VectorIndex) -> int:
        """Writes `index` as the collection's newest snapshot; returns its size in bytes."""
        payload = index.to_bytes()
        key = f"{_prefix(pk)}{index.revision}.npz"
        self.blobs.put(key, payload)
        stale = self.store.record_snapshot(pk, index.revision, key)
        if stale is not None:
            self.blobs.delete(stale)
        return len(payload)

    def load(self, pk: int, params: IndexParams) -> VectorIndex | None:
        """The newest snapshot, or None (none yet, or unreadable: rebuild from the rows)."""
        found = self.store.snapshot(pk)
        if found is None:
            return None
        try:
            payload = self.blobs.read_bytes(found[1])
        except BlobMissing:
            log.warning("snapshot %s is missing; rebuilding from the store", found[1])
            return None
        return VectorIndex.from_bytes(payload, params)

    def size(self, pk: int) -> int:
        found = self.store.snapshot(pk)
        info = self.blobs.stat(found[1]) if found else None
        return info.size_bytes if info else 0

    def delete(self, pk: int) -> int:
        """Removes every snapshot of a (deleted) collection."""
        return self.blobs.delete_prefix(_prefix(pk))

    def sweep(self) -> int:
        """Deletes snapshots of collections that no longer exist (a crash between a
        collection's delete and its snapshots')."""
        # Listed before the collections are read: a collection created meanwhile is live.
        listed = {info.key.split("/")[1] for info in self.blobs.list(PREFIX)}
        live = {str(pk) for pk in self.store.collection_pks()}
        stale = listed - live
        return sum(self.blobs.delete_prefix(f"{PREFIX}{pk}/") for pk in stale)
