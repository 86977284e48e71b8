"""Cross-tenant denial on every RPC: another tenant's adapters look absent, and stay intact."""

from __future__ import annotations

import grpc
import pytest

from loraplex.client.base import LoraplexClientError

pytestmark = pytest.mark.integration


def _code(call) -> grpc.StatusCode:
    with pytest.raises(LoraplexClientError) as err:
        call()
    return err.value.code


def test_every_rpc_denies_another_tenant(acme, globex, adapter_dir, tmp_path):
    original = acme.push("acme/secret", adapter_dir, aliases=["prod"])
    not_found = grpc.StatusCode.NOT_FOUND
    assert _code(lambda: globex.get("acme/secret")) == not_found
    assert _code(lambda: globex.get("acme/secret@prod")) == not_found
    assert _code(lambda: globex.get("acme/absent")) == not_found  # same answer as absent
    assert _code(lambda: list(globex.list_versions("acme/secret"))) == not_found
    assert _code(lambda: globex.pull("acme/secret", tmp_path / "stolen")) == not_found
    assert not (tmp_path / "stolen").exists()
    assert _code(lambda: globex.set_alias("acme/secret", "prod", 1)) == not_found
    assert _code(lambda: globex.delete_alias("acme/secret", "prod")) == not_found
    assert _code(lambda: globex.delete("acme/secret", 0, force=True)) == not_found
    assert _code(lambda: globex.check_compatibility("acme/secret")) == not_found
    assert _code(lambda: next(iter(globex.watch("acme/secret")))) == not_found
    assert (
        _code(lambda: globex.push("acme/secret", adapter_dir)) == grpc.StatusCode.PERMISSION_DENIED
    )
    assert list(globex.list()) == []

    # globex may use the same adapter name in its own namespace without touching acme's
    mine = globex.push("globex/secret", adapter_dir)
    assert mine.version == 1
    assert [s.name for s in acme.list()] == ["acme/secret"]
    after = acme.get("acme/secret@prod")
    assert (after.version, after.digest) == (original.version, original.digest)


def test_missing_or_wrong_key(registry_server, adapter_dir):
    from loraplex.client.base import ClientConfig
    from loraplex.client.registry import RegistryClient

    address = f"127.0.0.1:{registry_server.port}"
    with RegistryClient(config=ClientConfig(address=address)) as anonymous:
        assert _code(lambda: list(anonymous.list())) == grpc.StatusCode.UNAUTHENTICATED
    with RegistryClient(config=ClientConfig(address=address, api_key="lpx_wrong")) as wrong:
        assert _code(lambda: wrong.push("acme/x", adapter_dir)) == grpc.StatusCode.UNAUTHENTICATED
