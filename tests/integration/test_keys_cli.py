"""`loraplex keys create / list / revoke` against a running server reading the same file."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from loraplex.cli.main import app
from services.common.auth import KeyRing
from services.common.testing import server_thread
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings

pytestmark = pytest.mark.integration
runner = CliRunner()


def _list_adapters(port: int, key: str) -> int:
    env = {"LORAPLEX_REGISTRY_ADDR": f"127.0.0.1:{port}", "LORAPLEX_API_KEY": key}
    return runner.invoke(app, ["registry", "list"], env=env).exit_code


def test_a_revoked_key_stops_working_without_a_restart(tmp_path):
    keys_file = tmp_path / "keys.json"
    created = runner.invoke(
        app, ["keys", "create", "--tenant", "acme", "--keys-file", str(keys_file)]
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    settings = RegistrySettings(data_dir=tmp_path / "data")
    with server_thread(settings, RegistryApp(settings), KeyRing.load(keys_file)) as server:
        assert _list_adapters(server.port, key) == 0

        listed = runner.invoke(app, ["keys", "list", "--keys-file", str(keys_file)])
        assert listed.exit_code == 0 and "acme" in listed.stdout
        assert key not in listed.stdout
        key_id = next(line.split()[1] for line in listed.stdout.splitlines() if "acme" in line)

        revoked = runner.invoke(app, ["keys", "revoke", key_id, "--keys-file", str(keys_file)])
        assert revoked.exit_code == 0, revoked.output
        deadline = time.monotonic() + 60  # the ring re-reads the file once a second
        while _list_adapters(server.port, key) != 3:
            assert time.monotonic() < deadline, "revoked key still accepted"
            time.sleep(0.2)

    again = runner.invoke(app, ["keys", "revoke", key_id, "--keys-file", str(keys_file)])
    assert again.exit_code == 4
    nothing = runner.invoke(app, ["keys", "revoke", "--keys-file", str(keys_file)])
    assert nothing.exit_code == 2
