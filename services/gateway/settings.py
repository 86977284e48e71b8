"""Gateway settings (`LORAPLEX_GATEWAY_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="LORAPLEX_GATEWAY_", extra="ignore", populate_by_name=True
    )

    service_name: str = "gateway"
    #: gRPC: health and reflection only (probes); the API is HTTP.
    port: int = 50055
    metrics_port: int = 51055
    #: The OpenAI-compatible HTTP API (files, fine-tuning, vector stores, embeddings).
    openai_port: int = 8080
    #: Largest uploaded file (HTTP 413 above); also bounds every request body.
    max_file_bytes: int = Field(64 * 1024 * 1024, gt=0)
    training_addr: str = "127.0.0.1:50053"
    retrieval_addr: str = "127.0.0.1:50052"
    #: This service's key; training and retrieval must list it as service "gateway".
    service_key: str = ""
    #: Base URL of an inference HTTP front end (e.g. http://127.0.0.1:8054). When set, the
    #: gateway forwards the inference routes there, so one address serves every route
    #: (`loraplex suite up`); on Kubernetes an HTTPRoute splits by path instead.
    inference_url: str = ""
    training_timeout_seconds: float = 60.0
    retrieval_timeout_seconds: float = 120.0
    #: SQLAlchemy URL of the gateway's records; empty: SQLite under the data dir.
    database_url: str = ""

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        from services.common.db import sqlite_url

        return sqlite_url(self.service_dir("gateway") / "gateway.db")
