"""Registry settings (`LORAPLEX_REGISTRY_*`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.common.adapter_weights import DEFAULT_MAX_ABS
from services.common.blobstore import BlobStoreFields
from services.common.settings import ServiceSettings
from services.registry.metadata import DEFAULT_MAX_TOTAL_BYTES


class RegistrySettings(ServiceSettings, BlobStoreFields):
    """`LORAPLEX_REGISTRY_BLOB_URL` picks where blobs live: empty, local files under
    `<data_dir>/registry/blobs`; `s3://bucket/prefix` for object storage shared by replicas."""

    model_config = SettingsConfigDict(
        env_prefix="LORAPLEX_REGISTRY_", extra="ignore", populate_by_name=True
    )

    service_name: str = "registry"
    port: int = 50051
    metrics_port: int = 51051
    #: SQLAlchemy URL; empty means SQLite at <data_dir>/registry/registry.db.
    database_url: str = ""
    #: Largest adapter (all files together) a push may send.
    max_adapter_bytes: int = 2 * 1024**3
    #: Most files one version may hold.
    max_files: int = 64
    #: Highest LoRA rank accepted at push.
    max_rank: int = 256
    #: Largest absolute weight value a pushed adapter may hold; NaN and inf are always refused.
    max_weight_abs: float = DEFAULT_MAX_ABS
    #: Bytes that one version's lineage, metrics and description may take together.
    max_metadata_bytes: int = DEFAULT_MAX_TOTAL_BYTES
    #: Bytes per download chunk.
    download_chunk_bytes: int = 1024 * 1024
    #: Unreferenced blobs and temp files younger than this are left alone at start-up,
    #: since another replica sharing the storage may be mid-upload.
    orphan_grace_seconds: float = 3600.0
    #: A push's temp file not written to for this long, and not of a push live here, is
    #: a dead push's leftover.
    part_grace_seconds: float = 900.0
    #: How often leftovers are swept while the service runs (they are also swept at start-up).
    sweep_interval_seconds: float = 300.0
    #: How often this process polls the database for other replicas' events (one poller
    #: feeds every watch stream).
    watch_poll_seconds: float = 1.0
