"""The retrieval core: collections, durable upserts and deletes, filtered and hybrid search.

Knows nothing of gRPC. Every method takes the calling tenant and finds a
collection only under that tenant, so another tenant's collection is as absent
as one that never existed. Writes commit to the store first (that commit is the
acknowledgement), then the in-memory index mirrors them; snapshots and replay
keep the index in step across crashes. CPU work runs in a bounded executor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np

from services.common.errors import InvalidArgument, NotFound
from services.common.paging import Page
from services.retrieval import validate
from services.retrieval.chunking import Chunk, chunk_offsets, validate_chunking
from services.retrieval.embedder import Embedder, EmbedderPool
from services.retrieval.embedding import EmbeddedTexts, check_texts, embed_texts
from services.retrieval.index import IndexParams, VectorIndex
from services.retrieval.ingest import IngestLane
from services.retrieval.live import LiveCollection, load_index
from services.retrieval.metrics import CHUNKS_EMBEDDED, REBUILDS, SEARCH_SECONDS, WRITES
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
    """Owns every collection's live index; one instance per process."""

    def __init__(
        self,
        settings: RetrievalSettings,
        store: RetrievalStore,
        embedders: EmbedderPool,
        executor: ThreadPoolExecutor,
    ) -> None:
        self.settings = settings
        self.store = store
        self.embedders = embedders
        self.executor = executor
        self.params = IndexParams(
            hnsw_m=settings.hnsw_m,
            ef_construction=settings.hnsw_ef_construction,
            ef_search=settings.hnsw_ef_search,
            exact_filter_threshold=settings.exact_filter_threshold,
        )
        self._live: dict[tuple[str, str], LiveCollection] = {}
        self._maintenance: set[asyncio.Task[None]] = set()
        #: Document tokenizing and embedding; searches stay on `executor`.
        self.ingest = IngestLane(nice=settings.ingest_nice)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # Lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Loads every index from its snapshot plus the writes it lacks; then we are ready."""
        await self._run(self.embedders.get, "")
        records = await self._run(self.store.all_collections)
        index_dir = self.settings.index_dir()
        for record in records:
            index, on_disk = await self._run(load_index, self.store, record, index_dir, self.params)
            self._live[(record.tenant, record.name)] = LiveCollection(
                record, index, index_dir, on_disk
            )
        known = {f"{r.pk}.npz" for r in records}
        for path in index_dir.glob("*.npz"):
            if path.name not in known:
                path.unlink(missing_ok=True)  # a collection deleted before its snapshot was
        log.info("retrieval ready: %d collections loaded", len(records))

    async def close(self) -> None:
        await self.wait_idle()
        for live in list(self._live.values()):
            async with live.write_lock:
                await self._run(live.snapshot)
        await asyncio.to_thread(self.ingest.close)

    async def wait_idle(self) -> None:
        """Waits for background rebuilds (tests, shutdown)."""
        while self._maintenance:
            await asyncio.gather(*list(self._maintenance), return_exceptions=True)

    def _get(self, tenant: str, name: str) -> LiveCollection:
        live = self._live.get((tenant, validate.collection_name(name)))
        if live is None:
            raise NotFound(f"collection {name!r} not found")
        return live

    def _record_of(self, stored: CollectionRecord) -> CollectionRecord:
        live = self._live.get((stored.tenant, stored.name))
        return live.record if live is not None else stored

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
        index = VectorIndex(index_kind, record.dimension, self.params)
        self._live[(tenant, name)] = LiveCollection(record, index, self.settings.index_dir())
        log.info("collection %s/%s created (%s)", tenant, name, index_kind.value)
        return record

    async def get_collection(self, tenant: str, name: str) -> CollectionRecord:
        return self._get(tenant, name).record

    async def list_collections(
        self, tenant: str, page_size: int, page_token: str
    ) -> tuple[list[CollectionRecord], str]:
        page = Page.parse(page_size, page_token, first="")
        records = await self._run(self.store.list_collections, tenant, page.after, page.fetch)
        items, token = page.cut(records, key=lambda r: r.name)
        return [self._record_of(r) for r in items], token

    async def delete_collection(self, tenant: str, name: str) -> None:
        live = self._get(tenant, name)
        async with live.write_lock:
            await self._run(self.store.delete_collection, tenant, name)
            self._live.pop((tenant, name), None)
            live.deleted = True
            live.snapshot_path.unlink(missing_ok=True)
        log.info("collection %s/%s deleted", tenant, name)

    # Writes ------------------------------------------------------------------------------

    def _chunk(
        self, record: CollectionRecord, embedder: Embedder, docs: list[DocumentInput]
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
        live = self._get(tenant, name)
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
        live = self._get(tenant, name)
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
            await self._run(live.apply, result)
            if result.revision - live.snapshot_revision >= self.settings.snapshot_every_writes:
                await self._run(live.snapshot)
        if live.index.needs_rebuild(
            self.settings.rebuild_tombstone_ratio, self.settings.rebuild_min_tombstones
        ):
            self._schedule_rebuild(live)
        return result

    def _schedule_rebuild(self, live: LiveCollection) -> None:
        if live.rebuilding:
            return
        live.rebuilding = True
        task = asyncio.get_running_loop().create_task(self._rebuild(live))
        self._maintenance.add(task)
        task.add_done_callback(self._maintenance.discard)

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
                await self._run(live.snapshot)
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
        live = self._get(tenant, name)
        k = validate.query(query, top_k, self.settings)
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
        live = self._get(tenant, name)
        docs, chunks, size = await self._run(self.store.counts, live.record.pk)
        snapshot = live.snapshot_path.stat().st_size if live.snapshot_path.exists() else 0
        return CollectionStats(
            documents=docs,
            chunks=chunks,
            index_kind=live.record.index_kind,
            bytes_on_disk=size + snapshot,
            tombstones=live.index.tombstones,
            revision=live.record.revision,
        )
