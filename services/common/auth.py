"""API keys: resolving a bearer token to a tenant or a service identity.

Keys are random, high-entropy tokens, so a plain sha256 is the right hash: it is
what the keys file stores and what lookups compare. A tenant key acts only for
its own tenant; a service key names the tenant it acts for in metadata (without
one it may call only service-level RPCs, see `current_service`), and may call only
the RPCs its service needs (`ServiceScopes`), so a leaked service key cannot, say,
delete a tenant's collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.common.atomic import write_atomic
from services.common.context import ACT_FOR_TENANT_HEADER, Principal, PrincipalKind
from services.common.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)
#: How blocking work leaves the loop (`Kit.blocking`); kept here so auth needs no kit.
Blocking = Callable[..., Awaitable[Any]]

AUTHORIZATION_HEADER = "authorization"
KEY_PREFIX = "lpx_"
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


def key_id(digest: str) -> str:
    """A key's public handle in listings and revocation: a prefix of its hash, never the key."""
    return digest[:12]


@dataclass(frozen=True)
class KeyEntry:
    kind: PrincipalKind
    name: str


class ServiceScopes:
    """The calls each service identity may make on one server; everything else is denied.

    Servers declare what the other services need of them (inference reads adapters and
    searches; training publishes): gRPC RPCs by name, and HTTP routes, if any, as
    `METHOD /template` strings in `routes` (`GET /v1/models/{model}`). A service key
    with no entry may call nothing. A service key acting for no tenant may call only the
    `service_level` RPCs, which carry their tenants in the request and check them
    themselves.
    """

    def __init__(
        self,
        service_name: str = "",
        service_level: Iterable[str] = (),
        routes: Mapping[str, Iterable[str]] | None = None,
        **allowed: Iterable[str],
    ) -> None:
        self._service_level = frozenset(f"/{service_name}/{rpc}" for rpc in service_level)
        self._allowed = {
            identity: frozenset(f"/{service_name}/{rpc}" for rpc in rpcs)
            for identity, rpcs in allowed.items()
        }
        for identity, paths in (routes or {}).items():
            self._allowed[identity] = self._allowed.get(identity, frozenset()) | set(paths)

    def check(self, principal: Principal, method: str) -> None:
        if not principal.is_service:
            return
        if method not in self._allowed.get(principal.name, ()):
            raise PermissionDenied(
                f"service key {principal.name!r} may not call {_short(method)}:"
                " a service key may call only what its service needs; use a tenant key"
            )
        if not principal.tenant and method not in self._service_level:
            raise PermissionDenied(
                f"service key {principal.name!r} must name the tenant it acts for in"
                f" '{ACT_FOR_TENANT_HEADER}' metadata"
            )


def _short(route: str) -> str:
    """`/pkg.Service/Method` → `Method`; an HTTP route (`GET /v1/x`) stays whole."""
    return route if " " in route else route.rsplit("/", 1)[-1]


#: For servers that no other service calls.
NO_SERVICE_CALLS = ServiceScopes()


class KeyRing:
    """Hashed API keys → identities, loaded from a keys file and/or settings.

    Built once per process (`Kit.keys`) and shared by every front end. Lookups are
    in memory; the keys file is re-read by `refresh`, at most once a `RELOAD_SECONDS`
    and on the executor, never on the event loop. An unknown key costs one `stat` of
    the file off the loop (`resolve`), and a re-read only when the file changed on
    disk: a key created a moment ago works on its first call, and a flood of unknown
    keys reads nothing.
    """

    #: At most one re-read of the keys file per this many seconds (keys added or revoked
    #: without a restart take effect within it).
    RELOAD_SECONDS = 1.0

    def __init__(self, entries: Mapping[str, KeyEntry] | None = None) -> None:
        self._fixed: dict[str, KeyEntry] = dict(entries or {})
        self._from_file: dict[str, KeyEntry] = {}
        self._keys: dict[str, KeyEntry] = dict(self._fixed)
        self._file: Path | None = None
        self._file_digest: str | None = None
        self._file_stat: tuple[int, ...] | None = None
        self._checked_at = time.monotonic()
        self._reloading = _SingleFlight("reading the keys file")
        self._rechecking = _SingleFlight("checking the keys file")

    def _merge(self) -> None:
        """Environment keys win over the file's; rebuilt only when either changes."""
        self._keys = {**self._from_file, **self._fixed}

    def __len__(self) -> int:
        return len(self._keys)

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

    def _file_bytes(self) -> bytes | None:
        self._file_stat = self._stat_file()  # before the read: a later change shows
        try:
            return self._file.read_bytes() if self._file is not None else None
        except FileNotFoundError:
            return None

    def _stat_file(self) -> tuple[int, ...] | None:
        """What changes with any edit: `cp -p` keeps mtime but not ctime, a replace the inode."""
        try:
            st = self._file.stat() if self._file is not None else None
        except FileNotFoundError:
            return None
        return None if st is None else (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _read_file(self, content: bytes | None = None) -> dict[str, KeyEntry]:
        content = self._file_bytes() if content is None else content
        self._file_digest = hashlib.sha256(content).hexdigest() if content is not None else None
        if content is None:
            return {}
        try:
            return {
                item["sha256"]: KeyEntry(PrincipalKind(item["kind"]), item["name"])
                for item in read_entries(content)
            }
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"keys file {self._file} is malformed: {exc}") from exc

    def reload_due(self) -> bool:
        return self._file is not None and time.monotonic() - self._checked_at >= self.RELOAD_SECONDS

    def reload(self) -> None:
        """Blocking: picks up keys added to or revoked from the file while the server runs.

        Compares content, not modification time: `cp -p` or `rsync -t` keep the old
        mtime, and a revoked key must stop working all the same.
        """
        if self._file is None:
            return
        self._checked_at = time.monotonic()
        content = self._file_bytes()
        digest = hashlib.sha256(content).hexdigest() if content is not None else None
        if digest == self._file_digest:
            return
        try:
            from_file = self._read_file(content)
        except ValueError as exc:  # keep serving with the last good keys
            log.error("%s", exc)
            return
        self._from_file = from_file
        self._merge()
        log.info("reloaded %d keys from %s", len(self._from_file), self._file)

    async def refresh(self, blocking: Blocking | None = None) -> None:
        """Re-reads the keys file when due, on `blocking` (the kit's executor).

        Single-flight: calls that arrive while a re-read runs wait for that one.
        """
        if not self._reloading.busy:
            if not self.reload_due():
                return
            self._checked_at = time.monotonic()  # claims this period before the hop
        await self._reloading.run(blocking, self.reload)

    def _reload_if_changed(self) -> None:
        if self._stat_file() != self._file_stat:
            self.reload()

    async def resolve(
        self, metadata: Mapping[str, str], blocking: Blocking | None = None
    ) -> Principal:
        """`authenticate` against the keys file's latest content, as front ends call it.

        An unknown key re-checks the file once before it is refused: `loraplex keys
        create` followed at once by a call must not fail for up to `RELOAD_SECONDS`.
        """
        await self.refresh(blocking)
        try:
            return self.authenticate(metadata)
        except Unauthenticated:
            if self._file is None or not _bearer_token(metadata):
                raise  # no key to look for in the file
            await self._rechecking.run(blocking, self._reload_if_changed)
            return self.authenticate(metadata)

    def _merge_pairs(self, pairs: str, kind: PrincipalKind) -> None:
        for pair in filter(None, (p.strip() for p in pairs.split(","))):
            name, sep, key = pair.partition(":")
            if not sep or not key:
                raise ValueError(f"key entry {pair[:12]!r}… must look like name:key")
            digest = key.removeprefix("sha256:") if key.startswith("sha256:") else hash_key(key)
            self._fixed[digest] = KeyEntry(kind, validate_identity_name(name, kind.value))
        self._merge()

    def authenticate(self, metadata: Mapping[str, str]) -> Principal:
        """Resolves call metadata to a principal, or raises UNAUTHENTICATED/PERMISSION_DENIED.

        In memory only: `refresh` first to see the keys file's latest content.
        """
        known = self._keys
        token = _bearer_token(metadata)
        if not token:
            if not known:
                raise Unauthenticated(
                    "no API keys are configured on this server: create one with"
                    " `loraplex keys create --tenant NAME`"
                )
            raise Unauthenticated("missing API key: send 'authorization: Bearer <key>'")
        digest = hash_key(token)
        entry = known.get(digest)
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


def _bearer_token(metadata: Mapping[str, str]) -> str:
    """The key in `authorization: Bearer <key>`, or "" when none is sent."""
    scheme, _, token = metadata.get(AUTHORIZATION_HEADER, "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class _SingleFlight:
    """One blocking call at a time, off the loop: callers arriving meanwhile wait for it."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._running: asyncio.Future[None] | None = None

    @property
    def busy(self) -> bool:
        return self._running is not None

    async def run(self, blocking: Blocking | None, fn: Callable[[], None]) -> None:
        if self._running is None:
            self._running = asyncio.ensure_future(_run_blocking(blocking, fn))
            self._running.add_done_callback(self._done)
        # Shielded: one caller giving up must not cancel the call the others wait for.
        await asyncio.shield(self._running)

    def _done(self, running: asyncio.Future[None]) -> None:
        self._running = None
        if not running.cancelled() and running.exception() is not None:
            log.error("%s failed", self.what, exc_info=running.exception())


async def _run_blocking(blocking: Blocking | None, fn: Callable[[], None]) -> None:
    if blocking is not None:
        await blocking(fn)
    else:
        await asyncio.get_running_loop().run_in_executor(None, fn)


def read_entries(content: bytes) -> list[dict[str, str]]:
    data = json.loads(content)
    entries = data.get("keys", []) if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError('expected {"keys": [...]}')
    return entries


@dataclass(frozen=True)
class KeyListing:
    """What may be shown of a stored key: never the key, nor its whole hash."""

    id: str
    kind: PrincipalKind
    name: str
    created_at: str


def _listing(entry: dict[str, str]) -> KeyListing:
    kind = PrincipalKind(entry["kind"])
    return KeyListing(key_id(entry["sha256"]), kind, entry["name"], entry.get("created_at", ""))


@contextlib.contextmanager
def _edit_keys_file(path: Path) -> Iterator[list[dict[str, str]]]:
    """Read-modify-write under an exclusive lock, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = read_entries(path.read_bytes()) if path.exists() else []
        yield entries
        write_atomic(path, json.dumps({"keys": entries}, indent=2).encode(), mode=0o600)


def add_key_to_file(path: Path, kind: PrincipalKind, name: str, key: str | None = None) -> str:
    """Adds a key (generated unless given) to a keys file; returns the raw key, shown once."""
    validate_identity_name(name, kind.value)
    key = key or generate_key()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    with _edit_keys_file(path) as entries:
        entries.append(
            {"kind": kind.value, "name": name, "sha256": hash_key(key), "created_at": created}
        )
    return key


def list_keys(path: Path) -> list[KeyListing]:
    if not path.exists():
        return []
    return [_listing(e) for e in read_entries(path.read_bytes())]


def revoke_keys(
    path: Path,
    *,
    key_ids: Iterable[str] = (),
    kind: PrincipalKind | None = None,
    name: str = "",
    key: str = "",
) -> list[KeyListing]:
    """Removes the matching keys (by id, by raw key, or every key of one identity).

    Running servers stop accepting them within `KeyRing.RELOAD_SECONDS`. Returns what
    was removed; nothing matching is NOT_FOUND rather than a silent success.
    """
    ids = set(key_ids)
    digest = hash_key(key) if key else ""
    if not (ids or digest or name):
        raise InvalidArgument("say which keys to revoke: a key id, the key itself, or a name")

    def matches(entry: dict[str, str]) -> bool:
        if key_id(entry["sha256"]) in ids or (digest and entry["sha256"] == digest):
            return True
        return bool(name) and entry["name"] == name and (kind is None or entry["kind"] == kind)

    with _edit_keys_file(path) as entries:
        removed = [e for e in entries if matches(e)]
        entries[:] = [e for e in entries if not matches(e)]
    if not removed:
        raise NotFound("no stored key matches; `loraplex keys list` shows the ids")
    return [
        KeyListing(
            key_id(e["sha256"]), PrincipalKind(e["kind"]), e["name"], e.get("created_at", "")
        )
        for e in removed
    ]
