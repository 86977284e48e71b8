from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loraplex.client.base import ClientConfig
from loraplex.client.registry import RegistryClient
from services.common.testing import TEST_TENANT_KEYS, server_thread
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from tests.integration.registry.adapters import make_lora_adapter


def registry_settings(data_dir: Path, **overrides) -> RegistrySettings:
    values = {
        "orphan_grace_seconds": 0,
        "part_grace_seconds": 0,
        "watch_poll_seconds": 0.2,
        **overrides,
    }
    return RegistrySettings(data_dir=data_dir, **values)


@pytest.fixture
def registry_server(tmp_path) -> Iterator:
    settings = registry_settings(tmp_path / "data")
    with server_thread(settings, RegistryApp(settings)) as server:
        yield server


def client_for(server, tenant: str) -> RegistryClient:
    return RegistryClient(
        config=ClientConfig(
            address=f"127.0.0.1:{server.port}", api_key=TEST_TENANT_KEYS[tenant], timeout=30
        )
    )


@pytest.fixture
def acme(registry_server) -> Iterator[RegistryClient]:
    with client_for(registry_server, "acme") as client:
        yield client


@pytest.fixture
def globex(registry_server) -> Iterator[RegistryClient]:
    with client_for(registry_server, "globex") as client:
        yield client


@pytest.fixture
def adapter_dir(tmp_path) -> Path:
    return make_lora_adapter(tmp_path / "adapter")
