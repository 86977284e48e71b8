"""Retrieval-specific Prometheus metrics (the RPC-level ones come from the common kit)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CHUNKS_EMBEDDED = Counter(
    "loraplex_retrieval_chunks_embedded_total", "Chunks embedded for upserts, by model", ["model"]
)
WRITES = Counter(
    "loraplex_retrieval_writes_total",
    "Committed writes (upsert batches, deletes), by kind",
    ["kind"],
)
SEARCH_SECONDS = Histogram(
    "loraplex_retrieval_search_seconds",
    "Search time in the executor (embed, filter, rank, hydrate), by mode",
    ["mode"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
REBUILDS = Counter(
    "loraplex_retrieval_index_rebuilds_total", "HNSW rebuilds that dropped tombstones"
)
FORWARDED = Counter(
    "loraplex_retrieval_forwarded_total",
    "Calls relayed to the replica that serves their tenant, by RPC",
    ["rpc"],
)
LOAD_SECONDS = Histogram(
    "loraplex_retrieval_collection_load_seconds",
    "Loading a collection's index on first use (snapshot plus replay, or a build)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)
UNLOADS = Counter(
    "loraplex_retrieval_collection_unloads_total",
    "Collections unloaded: over the memory budget, placed elsewhere, or deleted elsewhere",
)
