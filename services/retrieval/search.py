"""One search, run whole in the executor: embed, filter, rank (dense or fused), hydrate.

Filters become the set of allowed chunk ids before ranking, and each ranker
searches only inside that set, so a filter never starves a too-short top-k.
"""

from __future__ import annotations

import dataclasses

from services.retrieval.bm25 import reciprocal_rank_fusion
from services.retrieval.embedder import TextEmbedder
from services.retrieval.live import LiveCollection
from services.retrieval.records import ChunkHit, Condition, SearchMode
from services.retrieval.settings import RetrievalSettings
from services.retrieval.store import RetrievalStore

_MIN_HYBRID_CANDIDATES = 50


def run_search(
    store: RetrievalStore,
    embedder: TextEmbedder,
    live: LiveCollection,
    query: str,
    k: int,
    conditions: list[Condition],
    min_score: float | None,
    mode: SearchMode,
    settings: RetrievalSettings,
) -> list[ChunkHit]:
    allowed = store.chunk_ids(live.record.pk, conditions) if conditions else None
    if allowed is not None and not len(allowed):
        return []
    vector = embedder.encode_query([query], settings.query_threads)[0]
    if mode is SearchMode.HYBRID:
        n = max(k * settings.hybrid_candidates_per_k, _MIN_HYBRID_CANDIDATES)
        _, dense_ids = live.index.search(vector, n, allowed)
        _, keyword_ids = live.bm25_index(store).search(query, n, allowed)
        ranked = reciprocal_rank_fusion([dense_ids, keyword_ids], settings.rrf_k)
    else:
        scores, ids = live.index.search(vector, k, allowed)
        ranked = list(zip(ids.tolist(), scores.tolist(), strict=True))
    if min_score is not None:
        ranked = [(i, s) for i, s in ranked if s >= min_score]
    # A few spares: a chunk deleted since the index was read is skipped, not returned.
    ranked = ranked[: k + 8]
    rows = store.hydrate(live.record.pk, [i for i, _ in ranked]) if ranked else {}
    hits = [
        dataclasses.replace(rows[chunk_id], score=float(score))
        for chunk_id, score in ranked
        if chunk_id in rows
    ]
    return hits[:k]
