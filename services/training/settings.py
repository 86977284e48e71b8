"""Training service settings (`LORAPLEX_TRAINING_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class TrainingSettings(ServiceSettings):
    """Where jobs run, where models and datasets live, and where adapters are published."""

    model_config = SettingsConfigDict(
        env_prefix="LORAPLEX_TRAINING_", extra="ignore", populate_by_name=True
    )

    service_name: str = "training"
    port: int = 50053
    metrics_port: int = 51053
    #: SQLAlchemy URL; empty means SQLite under `<data_dir>/training/training.db`.
    database_url: str = ""
    #: Base models, one folder per name; empty means `<data_dir>/models`.
    models_dir: Path | None = None
    #: Registry the finished adapters are pushed to; empty disables publishing.
    registry_addr: str = "127.0.0.1:50051"
    #: The training service's own key, used to act for a job's tenant at the registry.
    service_key: str = ""
    #: Deadline of one publishing call (a push of the whole adapter, or an alias move).
    publish_timeout_seconds: float = 600.0
    #: Jobs running at once (each in its own process).
    workers: int = 1
    #: "local" (worker processes) or "kubernetes" (one Kubernetes Job per training job).
    executor: str = "local"
    #: Seconds a cancelled worker gets to stop before it is killed.
    cancel_grace_seconds: float = 5.0
    #: Times a job is resumed after the service restarted under it before it is failed.
    max_resumes: int = 3
    #: This replica's identity in job leases; empty means "<hostname>:<port>", stable
    #: across restarts of one replica, so a restarted replica takes its own jobs back.
    replica_id: str = ""
    #: Seconds a job's lease lasts without a heartbeat: how long the other replicas wait
    #: before taking over the jobs of a replica that died.
    lease_seconds: float = 30.0
    #: Seconds between heartbeats renewing this replica's leases (well under lease_seconds).
    heartbeat_seconds: float = 10.0
    #: Largest dataset accepted, in bytes.
    max_dataset_bytes: int = 256 * 1024 * 1024
    #: Largest single JSONL row, in bytes.
    max_row_bytes: int = 256 * 1024
    #: Seconds between polls of the event log while streaming a job.
    event_poll_seconds: float = 0.2
    #: Kubernetes executor: namespace, image, volume claim holding the data root.
    k8s_namespace: str = "loraplex"
    k8s_image: str = "loraplex/training:latest"
    k8s_data_pvc: str = "loraplex-data"
    k8s_cpu: str = "4"
    k8s_memory: str = "16Gi"
    k8s_gpus: int = 0

    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        from services.common.db import sqlite_url

        return sqlite_url(self.service_dir("training") / "training.db")
