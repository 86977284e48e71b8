"""API keys: resolving a bearer token to a tenant or a service identity.

Keys are random, high-entropy tokens, so a plain sha256 is the right hash: it is
what the keys file stores and what lookups compare. A tenant key acts only for
its own tenant; a service key names the tenant it acts for in metadata, and
without one it may call only service-level RPCs (see `current_service`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.atomic import write_atomic
from services.common.context import ACT_FOR_TENANT_HEADER, Principal, PrincipalKind
from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

AUTHORIZATION_HEADER = "authorization"
KEY_PREFIX = "lpx_"
#: RPCs a service key may call acting for no tenant: each carries its tenants in the request
#: and checks them itself. Every other RPC needs the tenant named in metadata.
SERVICE_LEVEL_METHODS = frozenset({"/loraplex.registry.v1.RegistryService/WatchTenantAdapters"})
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def validate_identity_name(name: str, what: str = "tenant") -> str:
    """Tenant and service names: lower-case letters, digits, '-', '_'; 1-63 chars."""
    if not name or len(name) > 63 or not set(name) <= _NAME_CHARS or name[0] in "-_":
        raise InvalidArgument(
            f"{what} name {name!r} is invalid: use 1-63 lower-case letters, digits, '-' or '_',"
            " starting with a letter or digit"
        )
    return name


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class KeyEntry:
    kind: PrincipalKind
    name: str


class KeyRing:
    """Hashed API keys → identities, loaded from a keys file and/or settings."""

    #: How often the keys file is checked for changes (keys added without a restart).
    RELOAD_SECONDS = 1.0

    def __init__(self, entries: Mapping[str, KeyEntry] | None = None) -> None:
        self._fixed: dict[str, KeyEntry] = dict(entries or {})
        self._from_file: dict[str, KeyEntry] = {}
        self._keys: dict[str, KeyEntry] = dict(self._fixed)
        self._file: Path | None = None
        self._file_mtime: float | None = None
        self._checked_at = 0.0

    @property
    def _by_hash(self) -> dict[str, KeyEntry]:
        self._maybe_reload()
        return self._keys

    def _merge(self) -> None:
        """Environment keys win over the file's; rebuilt only when either changes."""
        self._keys = {**self._from_file, **self._fixed}

    def __len__(self) -> int:
        return len(self._by_hash)

    @classmethod
    def load(
        cls,
        keys_file: Path | None = None,
        tenant_keys: str = "",
        service_keys: str = "",
    ) -> KeyRing:
        """Builds the ring from a keys file plus `name:key` lists from the environment.

        In the environment lists, a key may be given raw or as `sha256:<hex>`.
        """
        ring = cls()
        ring._file = keys_file
        ring._from_file = ring._read_file()
        ring._merge()
        ring._merge_pairs(tenant_keys, PrincipalKind.TENANT)
        ring._merge_pairs(service_keys, PrincipalKind.SERVICE)
        return ring

    def _read_file(self) -> dict[str, KeyEntry]:
        path = self._file
        if path is None or not path.exists():
            self._file_mtime = None
            return {}
        self._file_mtime = path.stat().st_mtime
        try:
            data = json.loads(path.read_text())
            return {
                item["sha256"]: KeyEntry(PrincipalKind(item["kind"]), item["name"])
                for item in data.get("keys", [])
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"keys file {path} is malformed: {exc}") from exc

    def _maybe_reload(self, force: bool = False) -> None:
        """Picks up keys added to (or removed from) the file while the server runs."""
        if self._file is None:
            return
        if not force and time.monotonic() - self._checked_at < self.RELOAD_SECONDS:
            return
        self._checked_at = time.monotonic()
        mtime = self._file.stat().st_mtime if self._file.exists() else None
        if mtime == self._file_mtime:
            return
        try:
            self._from_file = self._read_file()
            self._merge()
            log.info("reloaded %d keys from %s", len(self._from_file), self._file)
        except ValueError as exc:  # keep serving with the last good keys
            log.error("%s", exc)

    def _merge_pairs(self, pairs: str, kind: PrincipalKind) -> None:
        for pair in filter(None, (p.strip() for p in pairs.split(","))):
            name, sep, key = pair.partition(":")
            if not sep or not key:
                raise ValueError(f"key entry {pair[:12]!r}… must look like name:key")
            digest = key.removeprefix("sha256:") if key.startswith("sha256:") else hash_key(key)
            self._fixed[digest] = KeyEntry(kind, validate_identity_name(name, kind.value))
        self._merge()

    def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        """Resolves call metadata to a principal, or raises UNAUTHENTICATED/PERMISSION_DENIED."""
        known = self._by_hash
        header = metadata.get(AUTHORIZATION_HEADER, "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            if not known:
                raise Unauthenticated(
                    "no API keys are configured on this server: create one with"
                    " `loraplex keys create --tenant NAME`"
                )
            raise Unauthenticated("missing API key: send 'authorization: Bearer <key>'")
        digest = hash_key(token.strip())
        entry = known.get(digest)
        if entry is None:  # maybe a key added a moment ago: a stat is cheap enough to check
            self._maybe_reload(force=True)
            entry = self._by_hash.get(digest)
        if entry is None:
            raise Unauthenticated("unknown API key")
        act_for = metadata.get(ACT_FOR_TENANT_HEADER, "")
        if entry.kind is PrincipalKind.TENANT:
            if act_for and act_for != entry.name:
                raise PermissionDenied("a tenant key cannot act for another tenant")
            return Principal(PrincipalKind.TENANT, entry.name, entry.name)
        if not act_for:  # acting for no tenant: only service-level RPCs accept it
            return Principal(PrincipalKind.SERVICE, entry.name, "")
        return Principal(
            PrincipalKind.SERVICE, entry.name, validate_identity_name(act_for, "tenant")
        )


def require_service_level(method: str, principal: Principal) -> None:
    """Refuses a service acting for no tenant anywhere but a service-level RPC."""
    if method not in SERVICE_LEVEL_METHODS:
        raise PermissionDenied(
            f"service key {principal.name!r} must name the tenant it acts for in"
            f" '{ACT_FOR_TENANT_HEADER}' metadata"
        )


def add_key_to_file(path: Path, kind: PrincipalKind, name: str, key: str | None = None) -> str:
    """Adds a key (generated unless given) to a keys file; returns the raw key, shown once."""
    validate_identity_name(name, kind.value)
    key = key or generate_key()
    data = json.loads(path.read_text()) if path.exists() else {"keys": []}
    data["keys"].append({"kind": kind.value, "name": name, "sha256": hash_key(key)})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2).encode(), mode=0o600)
    return key
