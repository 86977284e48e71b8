"""Two registry replicas on one PostgreSQL database and shared blob storage."""

from __future__ import annotations

import threading

import pytest

from services.common.testing import server_thread
from services.registry.app import RegistryApp
from tests.integration.registry.adapters import make_lora_adapter
from tests.integration.registry.conftest import client_for, registry_settings
from tests.postgres import postgres_bin, postgres_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(postgres_bin() is None, reason="no PostgreSQL server installed"),
]


def test_replicas_share_versions_aliases_and_watch_events(tmp_path):
    with postgres_server() as url:
        settings = registry_settings(tmp_path / "shared", database_url=url)
        with (
            server_thread(settings, RegistryApp(settings)) as first,
            server_thread(settings, RegistryApp(settings)) as second,
            client_for(first, "acme") as a,
            client_for(second, "acme") as b,
        ):
            events = []

            def follow():
                for event in b.watch("acme/shared"):
                    events.append(event)
                    if len(events) == 2:
                        return

            watcher = threading.Thread(target=follow, daemon=True)
            watcher.start()
            a.push("acme/shared", make_lora_adapter(tmp_path / "v1"))
            a.set_alias("acme/shared", "prod", 1)
            watcher.join(timeout=15)
            assert [(e.version, e.alias) for e in events] == [(1, ""), (1, "prod")]
            assert b.get("acme/shared@prod").version == 1
            assert b.push("acme/shared", make_lora_adapter(tmp_path / "v2", seed=2)).version == 2
            b.pull("acme/shared@2", tmp_path / "out")
            assert [v.version for v in a.list_versions("acme/shared")] == [2, 1]
