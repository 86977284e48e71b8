"""Key ring: hashing, file round trip, identity rules."""

from __future__ import annotations

import json

import pytest

from services.common.auth import KeyRing, add_key_to_file, hash_key
from services.common.context import PrincipalKind, current_service, current_tenant, principal_var
from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated


def test_keys_file_stores_only_hashes(tmp_path):
    path = tmp_path / "keys.json"
    key = add_key_to_file(path, PrincipalKind.TENANT, "acme")
    text = path.read_text()
    assert key not in text and hash_key(key) in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    ring = KeyRing.load(path)
    assert ring.authenticate({"authorization": f"Bearer {key}"}).tenant == "acme"


def test_env_pairs_accept_raw_and_hashed_keys():
    ring = KeyRing.load(tenant_keys=f"acme:k1,globex:sha256:{hash_key('k2')}")
    assert ring.authenticate({"authorization": "Bearer k2"}).tenant == "globex"
    assert ring.authenticate({"authorization": "bearer k1"}).tenant == "acme"


def test_identity_rules():
    ring = KeyRing.load(tenant_keys="acme:k1", service_keys="inference:s1")
    with pytest.raises(Unauthenticated):
        ring.authenticate({})
    with pytest.raises(Unauthenticated):
        ring.authenticate({"authorization": "Basic k1"})
    with pytest.raises(PermissionDenied):
        ring.authenticate({"authorization": "Bearer k1", "x-loraplex-tenant": "globex"})
    # naming its own tenant is harmless
    assert ring.authenticate({"authorization": "Bearer k1", "x-loraplex-tenant": "acme"})
    # a service acting for no tenant may call only service-level RPCs
    bare = ring.authenticate({"authorization": "Bearer s1"})
    token = principal_var.set(bare)
    try:
        with pytest.raises(PermissionDenied, match="must name the tenant"):
            current_tenant()
        assert current_service() == "inference"
    finally:
        principal_var.reset(token)
    token = principal_var.set(ring.authenticate({"authorization": "Bearer k1"}))
    try:
        with pytest.raises(PermissionDenied, match="only a service key"):
            current_service()
    finally:
        principal_var.reset(token)
    svc = ring.authenticate({"authorization": "Bearer s1", "x-loraplex-tenant": "globex"})
    assert svc.is_service and svc.tenant == "globex"
    with pytest.raises(InvalidArgument):
        ring.authenticate({"authorization": "Bearer s1", "x-loraplex-tenant": "../etc"})


def test_empty_ring_says_how_to_fix():
    with pytest.raises(Unauthenticated, match="loraplex keys create"):
        KeyRing().authenticate({})


@pytest.mark.parametrize("bad", ["", "UPPER", "a/b", "-x", "x" * 64, "../x"])
def test_bad_names_refused(tmp_path, bad):
    with pytest.raises(InvalidArgument):
        add_key_to_file(tmp_path / "k.json", PrincipalKind.TENANT, bad)


def test_malformed_keys_file(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{"kind": "tenant"}]}))
    with pytest.raises(ValueError, match="malformed"):
        KeyRing.load(path)


def test_keys_added_to_the_file_work_without_a_restart(tmp_path, monkeypatch):
    path = tmp_path / "keys.json"
    first = add_key_to_file(path, PrincipalKind.TENANT, "acme")
    ring = KeyRing.load(path, service_keys="inference:s1")
    monkeypatch.setattr(KeyRing, "RELOAD_SECONDS", 3600.0)  # an unknown key checks anyway
    assert ring.authenticate({"authorization": f"Bearer {first}"}).tenant == "acme"
    second = add_key_to_file(path, PrincipalKind.TENANT, "globex")
    import os

    os.utime(path, (1, 1))  # a distinct mtime even within the clock's resolution
    assert ring.authenticate({"authorization": f"Bearer {second}"}).tenant == "globex"
    assert ring.authenticate({"authorization": f"Bearer {first}"}).tenant == "acme"
    monkeypatch.setattr(KeyRing, "RELOAD_SECONDS", 0.0)
    path.write_text("{broken")
    os.utime(path, (2, 2))
    assert ring.authenticate({"authorization": f"Bearer {first}"}).tenant == "acme"
    assert ring.authenticate({"authorization": "Bearer s1", "x-loraplex-tenant": "acme"})
