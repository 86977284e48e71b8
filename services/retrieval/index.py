"""FAISS indexes keyed by chunk id, with tombstones for HNSW and atomic snapshots.

Exact indexes (inner product over unit vectors) remove vectors directly. HNSW
graphs cannot remove, so deleted ids become tombstones excluded inside every
search by an id selector, until a rebuild from the store drops them. A snapshot
records the revision it contains, so a load only replays newer writes.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from dataclasses import dataclass

import faiss
import numpy as np

from services.retrieval.records import IndexKind
from services.retrieval.settings import RetrievalSettings

log = logging.getLogger(__name__)

_KIND_CODES = {IndexKind.EXACT: 1, IndexKind.HNSW: 2}


#: Size-based efSearch (`auto_ef_search`): today's 96 up to 100k vectors, then 64 more per
#: doubling of the graph. Fitted on bench/retrieval_scale_bench.py's efSearch sweep (M=32,
#: efConstruction=64, SYNTHETIC rank-48 vectors in 384-d, 2026-12-07): the beam that
#: reaches recall@10 0.95 grew by about 55-60 per doubling (about 65 at 100k, 160 at 300k,
#: 250 at 1M), so 64 keeps a margin: measured 0.966 / 0.968 / 0.967 at 100k / 300k / 1M
#: (beams 96 / 198 / 309). Past 1M it is an extrapolation, and real embeddings may need
#: more or less: set `ef_search` (LORAPLEX_RETRIEVAL_HNSW_EF_SEARCH) to fix the beam.
AUTO_EF_FLOOR = 96
AUTO_EF_BASE_SIZE = 100_000
AUTO_EF_PER_DOUBLING = 64


def auto_ef_search(ntotal: int) -> int:
    """efSearch for an HNSW graph of `ntotal` vectors: a fixed beam loses recall as the
    graph grows (0.966 at 100k, 0.856 at 1M with 96), so the beam grows with it."""
    if ntotal <= AUTO_EF_BASE_SIZE:
        return AUTO_EF_FLOOR
    doublings = math.log2(ntotal / AUTO_EF_BASE_SIZE)
    return math.ceil(AUTO_EF_FLOOR + AUTO_EF_PER_DOUBLING * doublings)


def search_beam(ef_search: int | None, ntotal: int, k: int, allowed: int | None) -> int:
    """efSearch of one search: the configured beam, else the size-based one; never below
    k; wider for a selective filter over `allowed` ids (up to 4x), so fewer searches need
    the exact fallback."""
    base = auto_ef_search(ntotal) if ef_search is None else ef_search
    ef = max(base, k)
    if allowed:
        ef = max(ef, min(k * ntotal // allowed, 4 * base))
    return ef


@dataclass(frozen=True)
class IndexParams:
    hnsw_m: int = 32
    ef_construction: int = 64
    #: A fixed efSearch at every size; None: `auto_ef_search` of the graph's size.
    ef_search: int | None = None
    #: Filtered HNSW searches over at most this many chunks are computed exactly.
    exact_filter_threshold: int = 4096
    #: OpenMP threads per search (0: OpenMP's default, every core).
    search_threads: int = 1

    @classmethod
    def from_settings(cls, settings: RetrievalSettings) -> IndexParams:
        return cls(
            hnsw_m=settings.hnsw_m,
            ef_construction=settings.hnsw_ef_construction,
            ef_search=settings.hnsw_ef_search,
            exact_filter_threshold=settings.exact_filter_threshold,
            search_threads=settings.faiss_threads,
        )


_omp = threading.local()


def _search_threads(threads: int) -> None:
    """OpenMP's thread count is per calling thread: setting it once on the main thread
    leaves the executor threads that run searches on every core, where a single-query
    flat search splits the database over spinning OpenMP teams (2x slower on 2 cores)."""
    if threads > 0 and getattr(_omp, "threads", 0) != threads:
        faiss.omp_set_num_threads(threads)
        _omp.threads = threads


def _new_faiss(kind: IndexKind, dimension: int, params: IndexParams) -> faiss.IndexIDMap2:
    if kind is IndexKind.HNSW:
        inner = faiss.IndexHNSWFlat(dimension, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = params.ef_construction
    else:
        inner = faiss.IndexFlatIP(dimension)
    return faiss.IndexIDMap2(inner)


class VectorIndex:
    """One collection's vectors; thread-safe (FAISS itself is not for add vs search)."""

    def __init__(
        self,
        kind: IndexKind,
        dimension: int,
        params: IndexParams,
        index: faiss.IndexIDMap2 | None = None,
        tombstones: np.ndarray | None = None,
        revision: int = 0,
    ) -> None:
        self.kind = kind
        self.dimension = dimension
        self.params = params
        self._index = index if index is not None else _new_faiss(kind, dimension, params)
        self._tombstones: set[int] = set() if tombstones is None else set(tombstones.tolist())
        self.revision = revision
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls,
        kind: IndexKind,
        dimension: int,
        params: IndexParams,
        ids: np.ndarray,
        vectors: np.ndarray,
        revision: int,
    ) -> VectorIndex:
        index = cls(kind, dimension, params, revision=revision)
        index.add(ids, vectors)
        return index

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            with self._lock:
                self._index.add_with_ids(
                    np.ascontiguousarray(vectors, dtype=np.float32),
                    np.ascontiguousarray(ids, dtype=np.int64),
                )

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        with self._lock:
            if self.kind is IndexKind.HNSW:
                self._tombstones.update(int(i) for i in ids)
            else:
                self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def apply(
        self, revision: int, added_ids: np.ndarray, vectors: np.ndarray, removed: np.ndarray
    ) -> None:
        """Mirrors one committed write; removals first, since replaced ids are never reused."""
        self.remove(removed)
        self.add(added_ids, vectors)
        self.revision = max(self.revision, revision)

    def live_ids(self) -> np.ndarray:
        with self._lock:
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            if self._tombstones:
                ids = ids[~np.isin(ids, np.fromiter(self._tombstones, dtype=np.int64))]
        return ids

    def needs_rebuild(self, ratio: float, minimum: int) -> bool:
        if self.kind is not IndexKind.HNSW or not self._tombstones:
            return False
        return len(self._tombstones) >= max(minimum, ratio * max(self.ntotal, 1))

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) among `allowed` ids (all live ids when None), best first."""
        query = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        _search_threads(self.params.search_threads)
        with self._lock:
            if self.ntotal == 0 or k <= 0 or (allowed is not None and not len(allowed)):
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            if allowed is not None:
                small = len(allowed) <= self.params.exact_filter_threshold
                if self.kind is IndexKind.HNSW and small:
                    return self._exact_subset(query, k, allowed)
                selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            elif self._tombstones:
                dead = np.fromiter(self._tombstones, dtype=np.int64)
                selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead))
            else:
                selector = None
            if self.kind is IndexKind.HNSW:
                count = None if allowed is None else len(allowed)
                ef = search_beam(self.params.ef_search, self.ntotal, k, count)
                params = faiss.SearchParametersHNSW(efSearch=ef)
            else:
                params = faiss.SearchParameters()
            if selector is not None:
                params.sel = selector
            scores, ids = self._index.search(query, min(k, self.ntotal), params=params)
            keep = ids[0] >= 0
            # A selective filter can cut the graph so HNSW misses allowed vectors:
            # an under-filled result falls back to exact over the subset.
            underfilled = allowed is not None and keep.sum() < min(k, len(allowed))
            if self.kind is IndexKind.HNSW and underfilled:
                return self._exact_subset(query, k, allowed)
        return scores[0][keep], ids[0][keep]

    def _exact_subset(
        self, query: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Small filtered HNSW searches: brute force over the allowed vectors, never missing one."""
        present = allowed[np.isin(allowed, self._ids_array())]
        if self._tombstones:
            present = present[~np.isin(present, np.fromiter(self._tombstones, dtype=np.int64))]
        present = np.ascontiguousarray(present, dtype=np.int64)
        if not len(present):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        vectors = self._index.reconstruct_batch(present)
        scores = vectors @ query[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return scores[order].astype(np.float32), present[order]

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of the given ids (benchmarks and checks)."""
        with self._lock:
            return self._index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))

    def _ids_array(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    # Snapshots ---------------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """About what the index holds in memory: vectors, ids, and the HNSW links."""
        per_vector = 4 * self.dimension + 8
        if self.kind is IndexKind.HNSW:
            per_vector += 4 * 2 * self.params.hnsw_m + 8
        return self.ntotal * per_vector + 16 * len(self._tombstones)

    def to_bytes(self) -> bytes:
        """Index, tombstones and revision as one snapshot payload."""
        with self._lock:
            data = faiss.serialize_index(self._index)
            tombstones = np.fromiter(self._tombstones, dtype=np.int64)
            header = np.asarray([self.revision, self.dimension, _KIND_CODES[self.kind]], np.int64)
        buffer = io.BytesIO()
        np.savez(buffer, header=header, index=data, tombstones=tombstones)
        del data  # at 1M HNSW vectors each copy is ~1.8 GiB: hold at most two at once
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes, params: IndexParams) -> VectorIndex | None:
        """The snapshot in `payload`, or None if it is unreadable (then: rebuild)."""
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as data:
                revision, dimension, code = (int(x) for x in data["header"])
                index = faiss.deserialize_index(data["index"])
                tombstones = data["tombstones"]
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("index snapshot unreadable (%s); rebuilding from the store", exc)
            return None
        kind = next(k for k, c in _KIND_CODES.items() if c == code)
        return cls(kind, dimension, params, index, tombstones, revision)
