"""`loraplex registry …` and `loraplex keys create` as a user runs them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from loraplex.cli.main import app
from services.common.testing import TEST_TENANT_KEYS

pytestmark = pytest.mark.integration
runner = CliRunner()


def cli(server, tenant: str, *args: str):
    env = {
        "LORAPLEX_REGISTRY_ADDR": f"127.0.0.1:{server.port}",
        "LORAPLEX_API_KEY": TEST_TENANT_KEYS[tenant],
    }
    return runner.invoke(app, ["registry", *args], env=env)


def test_cli_push_list_show_alias_pull_rm(registry_server, adapter_dir, tmp_path):
    pushed = cli(
        registry_server, "acme", "push", "acme/support", str(adapter_dir),
        "--alias", "staging", "--metric", "test_loss=0.5", "--lineage", "dataset=abc",
    )  # fmt: skip
    assert pushed.exit_code == 0, pushed.output
    assert "acme/support@1" in pushed.output

    listed = cli(registry_server, "acme", "list", "--json")
    assert listed.exit_code == 0
    (entry,) = json.loads(listed.output)
    assert entry["ref"] == "acme/support@1" and entry["versions"] == 1

    shown = cli(registry_server, "acme", "show", "acme/support@staging")
    details = json.loads(shown.output)
    assert details["metrics"] == {"test_loss": 0.5} and details["lineage"] == {"dataset": "abc"}

    assert cli(registry_server, "acme", "alias", "acme/support", "prod", "1").exit_code == 0
    pulled = cli(registry_server, "acme", "pull", "acme/support@prod", str(tmp_path / "out"))
    assert pulled.exit_code == 0, pulled.output
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()

    refused = cli(registry_server, "acme", "rm", "acme/support@1")
    assert refused.exit_code == 5, refused.output  # FAILED_PRECONDITION: aliases point at it
    assert cli(registry_server, "acme", "rm", "acme/support", "--force").exit_code == 0


def test_cli_exit_codes(registry_server, adapter_dir, tmp_path):
    cli(registry_server, "acme", "push", "acme/mine", str(adapter_dir))
    assert cli(registry_server, "globex", "show", "acme/mine").exit_code == 4  # NOT_FOUND
    assert cli(registry_server, "acme", "show", "bad name").exit_code == 2  # INVALID_ARGUMENT
    (adapter_dir / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    assert cli(registry_server, "acme", "push", "acme/p", str(adapter_dir)).exit_code == 2
    missing = cli(registry_server, "acme", "push", "acme/p", str(tmp_path / "nope"))
    assert missing.exit_code == 2
    unauthenticated = runner.invoke(
        app,
        ["registry", "list"],
        env={"LORAPLEX_REGISTRY_ADDR": f"127.0.0.1:{registry_server.port}", "LORAPLEX_API_KEY": ""},
    )
    assert unauthenticated.exit_code == 3


def test_keys_create_stores_only_the_hash(tmp_path):
    keys_file = tmp_path / "keys.json"
    result = runner.invoke(
        app, ["keys", "create", "--tenant", "acme", "--keys-file", str(keys_file)]
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("lpx_") and key not in keys_file.read_text()
    bad = runner.invoke(
        app, ["keys", "create", "--tenant", "Bad/Name", "--keys-file", str(keys_file)]
    )
    assert bad.exit_code == 2
