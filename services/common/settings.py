"""Typed settings shared by every service, read from environment variables.

Each service subclasses `ServiceSettings` with its own prefix
(`LORAPLEX_<SERVICE>_`); suite-wide values (data root, keys, client TLS) are read
from un-prefixed `LORAPLEX_*` names so one environment configures the suite.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _suite(name: str) -> AliasChoices:
    return AliasChoices(f"LORAPLEX_{name}")


class ClientTlsSettings(BaseSettings):
    """How this process dials other services (and how the SDK dials any service)."""

    model_config = SettingsConfigDict(env_prefix="LORAPLEX_TLS_", extra="ignore")

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name_override: str = ""


class ServiceSettings(BaseSettings):
    """Settings every gRPC server has; defaults run on one laptop."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    service_name: str = "loraplex"
    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0
    data_dir: Path = Field(Path(".loraplex"), validation_alias=_suite("DATA_DIR"))
    log_level: str = Field("INFO", validation_alias=_suite("LOG_LEVEL"))
    log_json: bool = Field(False, validation_alias=_suite("LOG_JSON"))
    keys_file: Path | None = Field(None, validation_alias=_suite("KEYS_FILE"))
    tenant_keys: str = Field("", validation_alias=_suite("API_KEYS"))
    service_keys: str = Field("", validation_alias=_suite("SERVICE_KEYS"))
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    grace_seconds: float = 10.0
    max_message_bytes: int = 8 * 1024 * 1024
    keepalive_seconds: int = 60
    max_concurrent_rpcs: int = 1000
    #: Threads of the bounded executor that runs blocking work (`Kit.blocking`).
    executor_threads: int = 4
    #: How this service dials the others (`LORAPLEX_TLS_*`), read once with the rest.
    client_tls: ClientTlsSettings = Field(default_factory=ClientTlsSettings)

    def resolved_keys_file(self) -> Path:
        return self.keys_file or self.data_dir / "keys.json"

    def service_dir(self, name: str) -> Path:
        path = self.data_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
