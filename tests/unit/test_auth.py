"""Key ring: hashing, file round trip, identity rules."""

from __future__ import annotations

import asyncio
import json
import os
import threading

import pytest

from services.common.auth import (
    KeyRing,
    ServiceScopes,
    add_key_to_file,
    hash_key,
    list_keys,
    revoke_keys,
)
from services.common.context import (
    Principal,
    PrincipalKind,
    current_service,
    current_tenant,
    principal_var,
)
from services.common.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated


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


async def test_keys_added_to_the_file_work_without_a_restart(tmp_path, monkeypatch):
    path = tmp_path / "keys.json"
    first = add_key_to_file(path, PrincipalKind.TENANT, "acme")
    ring = KeyRing.load(path, service_keys="inference:s1")
    monkeypatch.setattr(KeyRing, "RELOAD_SECONDS", 0.0)
    assert ring.authenticate({"authorization": f"Bearer {first}"}).tenant == "acme"
    second = add_key_to_file(path, PrincipalKind.TENANT, "globex")
    await ring.refresh()
    assert ring.authenticate({"authorization": f"Bearer {second}"}).tenant == "globex"
    assert ring.authenticate({"authorization": f"Bearer {first}"}).tenant == "acme"
    path.write_text("{broken")  # a bad edit keeps the last good keys
    await ring.refresh()
    assert ring.authenticate({"authorization": f"Bearer {first}"}).tenant == "acme"
    assert ring.authenticate({"authorization": "Bearer s1", "x-loraplex-tenant": "acme"})


async def test_revocation_is_seen_when_the_edit_keeps_the_modification_time(tmp_path):
    """`cp -p` / `rsync -t` keep the old mtime: a removed key must still stop working."""
    path = tmp_path / "keys.json"
    kept = add_key_to_file(path, PrincipalKind.TENANT, "acme")
    revoked = add_key_to_file(path, PrincipalKind.TENANT, "globex")
    ring = KeyRing.load(path)
    assert ring.authenticate({"authorization": f"Bearer {revoked}"}).tenant == "globex"
    before = path.stat()
    edited = tmp_path / "edited.json"
    edited.write_text(
        json.dumps(
            {"keys": [e for e in json.loads(path.read_text())["keys"] if e["name"] == "acme"]},
            indent=2,
        ).ljust(len(path.read_text()))
    )
    os.replace(edited, path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size
    ring._checked_at -= KeyRing.RELOAD_SECONDS  # as if RELOAD_SECONDS had passed
    await ring.refresh()
    with pytest.raises(Unauthenticated):
        ring.authenticate({"authorization": f"Bearer {revoked}"})
    assert ring.authenticate({"authorization": f"Bearer {kept}"}).tenant == "acme"


async def test_unknown_keys_cost_at_most_one_reload_a_second_off_the_loop(tmp_path, monkeypatch):
    """A flood of unknown keys must not re-read and hash the keys file per request."""
    path = tmp_path / "keys.json"
    add_key_to_file(path, PrincipalKind.TENANT, "acme")
    ring = KeyRing.load(path)
    reads: list[int] = []
    loop_thread = threading.get_ident()
    real = KeyRing._file_bytes

    def counted(self):
        reads.append(threading.get_ident())
        return real(self)

    monkeypatch.setattr(KeyRing, "_file_bytes", counted)
    bogus = {"authorization": "Bearer lpx_nobody"}

    async def attempt() -> None:
        with pytest.raises(Unauthenticated):
            await ring.resolve(bogus)

    await asyncio.gather(*(attempt() for _ in range(200)))
    assert reads == []  # loaded a moment ago: nothing is due yet
    ring._checked_at -= KeyRing.RELOAD_SECONDS
    await asyncio.gather(*(attempt() for _ in range(200)))
    assert len(reads) == 1  # one re-read for the whole burst (single-flight) ...
    assert reads[0] != loop_thread  # ... on a worker thread, never on the event loop
    await asyncio.gather(*(attempt() for _ in range(200)))
    assert len(reads) == 1  # and none again within the second


async def test_a_key_created_while_serving_works_on_its_first_call(tmp_path, monkeypatch):
    """`keys create` then a call at once: not refused for up to RELOAD_SECONDS."""
    path = tmp_path / "keys.json"
    add_key_to_file(path, PrincipalKind.TENANT, "acme")
    ring = KeyRing.load(path)
    monkeypatch.setattr(KeyRing, "RELOAD_SECONDS", 3600.0)  # no periodic re-read is due
    fresh = add_key_to_file(path, PrincipalKind.TENANT, "globex")
    assert (await ring.resolve({"authorization": f"Bearer {fresh}"})).tenant == "globex"
    # The same holds for the very first key of a server that started with none.
    empty = tmp_path / "empty.json"
    ring = KeyRing.load(empty)
    first = add_key_to_file(empty, PrincipalKind.TENANT, "initech")
    assert (await ring.resolve({"authorization": f"Bearer {first}"})).tenant == "initech"
    with pytest.raises(Unauthenticated, match="unknown API key"):
        await ring.resolve({"authorization": "Bearer lpx_nobody"})


def test_revoke_and_list_never_show_keys(tmp_path):
    path = tmp_path / "keys.json"
    acme = add_key_to_file(path, PrincipalKind.TENANT, "acme")
    acme2 = add_key_to_file(path, PrincipalKind.TENANT, "acme")
    svc = add_key_to_file(path, PrincipalKind.SERVICE, "inference")
    listed = list_keys(path)
    assert [(k.kind, k.name) for k in listed] == [
        (PrincipalKind.TENANT, "acme"),
        (PrincipalKind.TENANT, "acme"),
        (PrincipalKind.SERVICE, "inference"),
    ]
    assert all(k.created_at.endswith("+00:00") for k in listed)
    shown = repr(listed)
    assert not any(secret in shown for secret in (acme, acme2, svc, hash_key(acme)))

    removed = revoke_keys(path, key_ids=[listed[0].id])
    assert [k.id for k in removed] == [listed[0].id]
    ring = KeyRing.load(path)
    with pytest.raises(Unauthenticated):
        ring.authenticate({"authorization": f"Bearer {acme}"})
    assert ring.authenticate({"authorization": f"Bearer {acme2}"}).tenant == "acme"

    assert len(revoke_keys(path, key=svc)) == 1
    assert len(revoke_keys(path, kind=PrincipalKind.TENANT, name="acme")) == 1
    assert list_keys(path) == []
    with pytest.raises(NotFound):
        revoke_keys(path, name="acme")
    with pytest.raises(InvalidArgument):
        revoke_keys(path)


def test_service_scopes_allow_only_declared_rpcs():
    scopes = ServiceScopes("x.v1.S", inference=("Search",))
    tenant = Principal(PrincipalKind.TENANT, "acme", "acme")
    inference = Principal(PrincipalKind.SERVICE, "inference", "acme")
    training = Principal(PrincipalKind.SERVICE, "training", "acme")
    scopes.check(tenant, "/x.v1.S/Delete")  # tenants are not scoped here
    scopes.check(inference, "/x.v1.S/Search")
    for who, method in (
        (inference, "/x.v1.S/Delete"),
        (training, "/x.v1.S/Search"),
        (inference, "/y.v1.S/Search"),
    ):
        with pytest.raises(PermissionDenied, match="may not call"):
            scopes.check(who, method)
