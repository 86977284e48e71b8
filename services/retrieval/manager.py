"""The retrieval core: collections, durable upserts and deletes, filtered and hybrid search.

Knows nothing of gRPC. Every method takes the calling tenant and finds a
collection only under that tenant, so another tenant's collection is as absent
as one that never existed. Writes commit to the store first (that commit is the
acknowledgement), then the in-memory index mirrors them. Indexes load on first
use (snapshot in the blob store plus the writes after it) and unload past the
memory budget, snapshotting first (a load that arrives meanwhile waits for that
snapshot rather than rebuild from the rows); a search first reads the collection's
committed revision and catches up if another replica wrote since, so it sees every
acknowledged write.
CPU work runs in a bounded executor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import shutil
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from services.common.errors import InvalidArgument, NotFound
from services.common.paging import Page
from services.retrieval import validate
from services.retrieval.cache import CollectionCache
from services.retrieval.chunking import Chunk, chunk_offsets, validate_chunking
from services.retrieval.embedder import EmbedderPool, TextEmbedder
from services.retrieval.embedding import EmbeddedTexts, check_texts, embed_texts
from services.retrieval.index import IndexParams, VectorIndex
from services.retrieval.ingest import IngestLane
from services.retrieval.live import LiveCollection, catch_up, load_collection
from services.retrieval.metrics import (
    CHUNKS_EMBEDDED,
    REBUILDS,
    SEARCH_SECONDS,
    UNLOADS,
    WRITES,
)
from services.retrieval.records import (
    ChunkHit,
    CollectionRecord,
    CollectionStats,
    Condition,
    DocumentInput,
    IndexKind,
    PreparedDocument,
    SearchMode,
    WriteResult,
)
from services.retrieval.search import run_search
from services.retrieval.settings import RetrievalSettings
from services.retrieval.snapshots import SnapshotStore
from services.retrieval.store import RetrievalStore

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass
class UpsertProgress:
    chunks_embedded: int = 0
    chunks_total: int = 0
    documents_written: int = 0
    revision: int = 0
    done: bool = False


class CollectionManager:
    """Owns the loaded collections' indexes; one instance per process."""

    def __init__(
        self,
        settings: RetrievalSettings,
        store: RetrievalStore,
        snapshots: SnapshotStore,
        embedders: EmbedderPool,
        executor: ThreadPoolExecutor,
    ) -> None:
        self.settings = settings
        self.store = store
        self.snapshots = snapshots
        self.embedders = embedders
        self.executor = executor
        self.params = IndexParams.from_settings(settings)
        self.cache = CollectionCache(settings.memory_budget_bytes)
        self._maintenance: set[asyncio.Task[None]] = set()
        #: Collections whose unload (snapshot first) is under way, by (tenant, name).
        self._unloading: dict[tuple[str, str], asyncio.Task[None]] = {}
        #: Document tokenizing and embedding; searches stay on `executor`.
        self.ingest = IngestLane(nice=settings.ingest_nice)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # Lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Loads the embedder, not the indexes: each loads on first use."""
        await self._run(self.embedders.get, "")
        # Snapshots of releases before the blob store: derived data, rebuilt from the rows.
        legacy = self.settings.service_dir("retrieval") / "indexes"
        if legacy.is_dir():
            await self._run(functools.partial(shutil.rmtree, legacy, ignore_errors=True))
        swept = await self._run(self.snapshots.sweep)
        log.info("retrieval ready; indexes load on first use (%d stale snapshots swept)", swept)

    async def close(self) -> None:
        await self.wait_idle()
        for live in self.cache.values():
            await self._unload(live)
        await self.wait_idle()
        await asyncio.to_thread(self.ingest.close)

    async def wait_idle(self) -> None:
        """Waits for background rebuilds and unloads (tests, shutdown)."""
        while self._maintenance:
            await asyncio.gather(*list(self._maintenance), return_exceptions=True)

    async def _open(self, tenant: str, name: str) -> LiveCollection:
        """The caller's collection, loaded (once) if it is not yet."""
        key = (tenant, validate.collection_name(name))

        async def load() -> LiveCollection:
            unloading = self._unloading.get(key)
            if unloading is not None:  # its snapshot is what this load should read
                await asyncio.shield(unloading)
            record = await self._run(self.store.get_collection, tenant, key[1])
            return await self._run(load_collection, self.store, self.snapshots, record, self.params)

        live = await self.cache.get_or_load(key, load)
        self._enforce_budget()
        return live

    async def _fresh(self, tenant: str, name: str) -> LiveCollection:
        """Loaded and level with the store: one indexed read of the committed revision,
        so a read after an acknowledged write, made through any replica, sees it."""
        live = await self._open(tenant, name)
        revision = await self._run(self.store.revision, live.record.pk)
        if revision is None:  # deleted through another replica, perhaps made anew since
            self._forget(live)
            live = await self._open(tenant, name)
            revision = await self._run(self.store.revision, live.record.pk)
            if revision is None:
                self._forget(live)
                raise NotFound(f"collection {name!r} not found")
        if revision > live.index.revision:
            async with live.write_lock:
                if revision > live.index.revision:
                    await self._run(catch_up, self.store, live, revision)
                    live.record = dataclasses.replace(live.record, revision=live.index.revision)
        return live

    def _forget(self, live: LiveCollection) -> None:
        live.deleted = True
        if self.cache.get(live.key) is live:
            self.cache.pop(live.key)

    def _enforce_budget(self) -> None:
        for live in self.cache.over_budget():
            self._unload_later(live)

    def _unload_later(self, live: LiveCollection) -> None:
        """Unloads in the background; a load of the same collection meanwhile waits for
        the snapshot instead of rebuilding the index from the rows."""
        task = self._background(self._unload(live))
        self._unloading[live.key] = task

        def done(_: asyncio.Task[None], key: tuple[str, str] = live.key) -> None:
            if self._unloading.get(key) is task:
                del self._unloading[key]

        task.add_done_callback(done)

    async def _unload(self, live: LiveCollection) -> None:
        """Snapshots what the blob store lacks; the index is then dropped with the last
        reference (a search still holding it finishes first)."""
        try:
            async with live.write_lock:
                await self._run(live.snapshot, self.snapshots)
            UNLOADS.inc()
            log.info("unloaded %s/%s", *live.key)
        except Exception:
            log.exception("snapshot of %s/%s at unload failed", *live.key)

    def _background(self, work: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._maintenance.add(task)
        task.add_done_callback(self._maintenance.discard)
        return task

    async def release(self, keep: Callable[[str], bool]) -> int:
        """Unloads collections of tenants this replica no longer serves, and those deleted
        through another replica; returns how many (called on each membership tick)."""
        loaded = self.cache.values()
        if not loaded:
            return 0
        existing = await self._run(self.store.collection_pks, [x.record.pk for x in loaded])
        dropped = 0
        for live in loaded:
            if live.record.pk not in existing:
                self._forget(live)
                dropped += 1
            elif not keep(live.record.tenant):
                self.cache.pop(live.key)
                self._unload_later(live)
                dropped += 1
        return dropped

    # Collections -------------------------------------------------------------------------

    async def create_collection(
        self,
        tenant: str,
        name: str,
        embedding_model: str = "",
        index_kind: IndexKind = IndexKind.EXACT,
        chunk_size: int = 0,
        chunk_overlap: int = 0,
    ) -> CollectionRecord:
        validate.collection_name(name)
        model = self.embedders.resolve_name(embedding_model)
        embedder = await self._run(self.embedders.get, model)
        size = chunk_size or self.settings.default_chunk_size_tokens
        size = size if chunk_size else min(size, embedder.max_tokens)
        overlap = chunk_overlap or min(self.settings.default_chunk_overlap_tokens, size // 2)
        validate_chunking(size, overlap, embedder.max_tokens)
        record = CollectionRecord(
            pk=0,
            tenant=tenant,
            name=name,
            embedding_model=model,
            dimension=embedder.dimension,
            index_kind=index_kind,
            chunk_size=size,
            chunk_overlap=overlap,
            created_at=datetime.now(UTC),
            revision=0,
        )
        record = await self._run(
            self.store.create_collection, record, self.settings.max_collections_per_tenant
        )
        self.cache.put(
            LiveCollection(record, VectorIndex(index_kind, record.dimension, self.params))
        )
        log.info("collection %s/%s created (%s)", tenant, name, index_kind.value)
        return record

    async def get_collection(self, tenant: str, name: str) -> CollectionRecord:
        return await self._run(self.store.get_collection, tenant, validate.collection_name(name))

    async def list_collections(
        self, tenant: str, page_size: int, page_token: str
    ) -> tuple[list[CollectionRecord], str]:
        page = Page.parse(page_size, page_token, first="")
        records = await self._run(self.store.list_collections, tenant, page.after, page.fetch)
        return page.cut(records, key=lambda r: r.name)

    async def delete_collection(self, tenant: str, name: str) -> None:
        """Rows (cascading), snapshots and the loaded index; other replicas drop their
        copies on their next membership tick or on their next use of it."""
        key = (tenant, validate.collection_name(name))
        live = self.cache.get(key)
        if live is None:
            pk = await self._run(self.store.delete_collection, tenant, key[1])
        else:
            async with live.write_lock:
                pk = await self._run(self.store.delete_collection, tenant, key[1])
                self._forget(live)
        await self._run(self.snapshots.delete, pk)
        log.info("collection %s/%s deleted", tenant, name)

    # Writes ------------------------------------------------------------------------------

    def _chunk(
        self, record: CollectionRecord, embedder: TextEmbedder, docs: list[DocumentInput]
    ) -> list[tuple[list[Chunk], int]]:
        """Tokenizes documents (on the ingest lane): each one's chunks and token count.

        A document over the token limit is counted only a little past it, and not chunked.
        """
        limit = self.settings.max_document_tokens
        out = []
        for doc in docs:
            offsets = embedder.token_offsets(doc.text, limit)
            if len(offsets) > limit:
                out.append(([], len(offsets)))
                continue
            chunks = chunk_offsets(doc.text, offsets, record.chunk_size, record.chunk_overlap)
            out.append((chunks, len(offsets)))
        return out

    def _turns(self, docs: list[DocumentInput]) -> list[list[DocumentInput]]:
        """Documents grouped into lane turns of at most `ingest_slice_chars` (or one doc)."""
        turns: list[list[DocumentInput]] = []
        size = 0
        for doc in docs:
            if not turns or size + len(doc.text) > self.settings.ingest_slice_chars:
                turns.append([])
                size = 0
            turns[-1].append(doc)
            size += len(doc.text)
        return turns

    async def upsert(
        self, tenant: str, name: str, batches: AsyncIterator[list[DocumentInput]]
    ) -> AsyncIterator[UpsertProgress]:
        """Writes each batch atomically; yields progress while embedding and after each commit.

        Tokenizing and embedding run on the ingest lane in small slices, taking turns
        with other tenants' uploads, so neither searches nor small uploads wait for a
        large one.
        """
        live = await self._fresh(tenant, name)
        embedder = await self._run(self.embedders.get, live.record.embedding_model)
        progress = UpsertProgress(revision=live.record.revision)
        threads = self.settings.ingest_threads
        step = max(1, self.settings.ingest_slice_chunks)
        async for docs in batches:
            if not docs:
                continue
            validate.document_batch(docs, self.settings)
            prepared: list[PreparedDocument] = []
            batch_tokens = 0
            for turn in self._turns(docs):
                tokenized = await self.ingest.run(tenant, self._chunk, live.record, embedder, turn)
                for doc, (chunks, tokens) in zip(turn, tokenized, strict=True):
                    batch_tokens += tokens
                    validate.document_tokens(doc.doc_id, tokens, batch_tokens, self.settings)
                    if not chunks:
                        raise InvalidArgument(f"document {doc.doc_id!r} has no text to embed")
                    empty = np.zeros((0, live.record.dimension))
                    prepared.append(PreparedDocument(doc, chunks, empty))
            texts = [c.text for p in prepared for c in p.chunks]
            progress.chunks_total += len(texts)
            yield dataclasses.replace(progress)
            vectors = np.zeros((len(texts), live.record.dimension), dtype=np.float32)
            for start in range(0, len(texts), step):
                piece = texts[start : start + step]
                part = await self.ingest.run(tenant, embedder.encode, piece, threads)
                vectors[start : start + len(part)] = part
                progress.chunks_embedded += len(part)
                CHUNKS_EMBEDDED.labels(embedder.name).inc(len(part))
                yield dataclasses.replace(progress)
            offset = 0
            for item in prepared:
                item.vectors = vectors[offset : offset + len(item.chunks)]
                offset += len(item.chunks)
            result = await self._commit(live, self.store.write_documents, prepared)
            WRITES.labels("upsert").inc()
            progress.documents_written += result.documents
            progress.revision = result.revision
            yield dataclasses.replace(progress)
        progress.done = True
        yield progress

    async def delete_documents(
        self, tenant: str, name: str, doc_ids: list[str], conditions: list[Condition]
    ) -> tuple[int, int]:
        """Deletes by ids or by filter (exactly one); returns (documents deleted, revision)."""
        live = await self._fresh(tenant, name)
        if bool(doc_ids) == bool(conditions):
            raise InvalidArgument("give either document_ids or a filter, not both")
        validate.conditions(conditions, self.settings)
        result = await self._commit(live, self.store.delete_documents, doc_ids, conditions)
        WRITES.labels("delete").inc()
        return result.documents, result.revision

    async def _commit(self, live: LiveCollection, write: Callable[..., WriteResult], *args: Any):
        """Commits under the collection's write lock so the index applies writes in order."""
        async with live.write_lock:
            if live.deleted:
                raise NotFound(f"collection {live.record.name!r} not found")
            result = await self._run(write, live.record, *args)
            await self._run(live.apply, self.store, result)
            if result.revision - live.snapshot_revision >= self.settings.snapshot_every_writes:
                await self._run(live.snapshot, self.snapshots)
        self._enforce_budget()
        if live.index.needs_rebuild(
            self.settings.rebuild_tombstone_ratio, self.settings.rebuild_min_tombstones
        ):
            self._schedule_rebuild(live)
        return result

    def _schedule_rebuild(self, live: LiveCollection) -> None:
        if live.rebuilding:
            return
        live.rebuilding = True
        self._background(self._rebuild(live))

    async def _rebuild(self, live: LiveCollection) -> None:
        """Rebuilds an HNSW graph from the store without its tombstones; searches go on."""
        try:
            async with live.write_lock:
                if live.deleted:
                    return
                record = live.record
                ids, vectors = await self._run(
                    self.store.vectors, record.pk, None, record.dimension
                )
                fresh = await self._run(
                    VectorIndex.build,
                    record.index_kind,
                    record.dimension,
                    self.params,
                    ids,
                    vectors,
                    live.index.revision,
                )
                dropped = live.index.tombstones
                live.index = fresh
                await self._run(live.snapshot, self.snapshots)
            REBUILDS.inc()
            log.info("rebuilt %s/%s: %d tombstones dropped", record.tenant, record.name, dropped)
        except Exception:
            log.exception("index rebuild of %s failed; tombstones stay", live.record.name)
        finally:
            live.rebuilding = False

    # Reads -------------------------------------------------------------------------------

    async def search(
        self,
        tenant: str,
        name: str,
        query: str,
        top_k: int = 0,
        conditions: list[Condition] | None = None,
        min_score: float | None = None,
        mode: SearchMode = SearchMode.DENSE,
    ) -> tuple[list[ChunkHit], int]:
        """Top-k chunks of the caller's collection, best first, with the revision searched."""
        live = await self._fresh(tenant, name)
        k = validate.query(query, top_k, self.settings, min_score)
        conds = validate.conditions(conditions or [], self.settings)
        embedder = self.embedders.get(live.record.embedding_model)
        with SEARCH_SECONDS.labels(mode.value).time():
            hits = await self._run(
                run_search,
                self.store,
                embedder,
                live,
                query,
                k,
                conds,
                min_score,
                mode,
                self.settings,
            )
        return hits, live.index.revision

    async def embed(self, texts: list[str], model: str = "") -> EmbeddedTexts:
        """Query-path vectors for texts that belong to no collection; no tenant data read."""
        check_texts(texts)
        embedder = await self._run(self.embedders.get, model)
        return await self._run(embed_texts, embedder, texts)

    async def stats(self, tenant: str, name: str) -> CollectionStats:
        live = await self._fresh(tenant, name)
        docs, chunks, size = await self._run(self.store.counts, live.record.pk)
        snapshot = await self._run(self.snapshots.size, live.record.pk)
        return CollectionStats(
            documents=docs,
            chunks=chunks,
            index_kind=live.record.index_kind,
            bytes_on_disk=size + snapshot,
            tombstones=live.index.tombstones,
            revision=live.record.revision,
        )
