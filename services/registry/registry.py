"""The registry core: push, resolve, list, download, alias, delete, compatibility, watch.

Knows nothing of gRPC. Every call takes the caller's tenant and checks it here,
so no edge can forget to; another tenant's adapters read as absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import tarfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TypeVar

from services.common.adapter_ref import (
    AdapterName,
    AdapterRef,
    parse_name,
    parse_ref,
    validate_alias,
)
from services.common.adapter_weights import check_weight_values
from services.common.auth import validate_identity_name
from services.common.blobstore import BlobMissing, BlobStore, BlobWriter
from services.common.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    LoraplexError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from services.common.kit import Blocking
from services.common.paging import Page
from services.registry.compat import incompatibilities
from services.registry.metadata import check_metadata
from services.registry.names import validate_file_path
from services.registry.peft_files import (
    CONFIG_FILE,
    PeftInfo,
    check_file_names,
    check_safetensors,
    parse_config,
)
from services.registry.records import (
    AdapterSummary,
    AliasRecord,
    EventKind,
    EventRecord,
    FileRecord,
    VersionRecord,
    now,
)
from services.registry.settings import RegistrySettings
from services.registry.store import AdapterStore
from services.registry.watch import POLL_BATCH, EventHub, Subscription

log = logging.getLogger(__name__)
T = TypeVar("T")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: Module names one compatibility check may name (a model has a handful of distinct ones).
MAX_AVAILABLE_MODULES = 4096
MAX_MODULE_CHARS = 512
#: Tenants one WatchTenantAdapters stream may follow.
MAX_WATCHED_TENANTS = 100_000


class PushFormat(Enum):
    FILES = "files"
    TAR = "tar"


@dataclass(frozen=True)
class PushHeader:
    name: str
    files: Sequence[FileRecord]
    format: PushFormat = PushFormat.FILES
    lineage: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    expect_base_model: str = ""
    max_rank: int = 0
    aliases: Sequence[str] = ()
    description: str = ""


@dataclass(frozen=True)
class Requirements:
    """What a serving engine needs of an adapter; empty fields are not checked."""

    base_model: str = ""
    max_rank: int = 0
    available_modules: Sequence[str] = ()
    supported_peft_types: Sequence[str] = ()

    def validate(self) -> Requirements:
        if len(self.available_modules) > MAX_AVAILABLE_MODULES or any(
            len(m) > MAX_MODULE_CHARS for m in self.available_modules
        ):
            raise InvalidArgument(
                f"available_modules may name at most {MAX_AVAILABLE_MODULES} modules of at"
                f" most {MAX_MODULE_CHARS} characters"
            )
        return self

    @property
    def empty(self) -> bool:
        return not (
            self.base_model or self.max_rank or self.available_modules
            or self.supported_peft_types
        )  # fmt: skip


class Registry:
    """`blocking` runs store and blob work off the event loop (the kit's executor)."""

    def __init__(
        self,
        settings: RegistrySettings,
        store: AdapterStore,
        blobs: BlobStore,
        blocking: Blocking,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.limits = settings
        self._blocking = blocking
        self.watch_poll_seconds = settings.watch_poll_seconds
        self._inflight: Counter[str] = Counter()
        self.hub = EventHub(store, self._run, self.watch_poll_seconds)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await self._blocking(fn, *args)

    def _notify(self) -> None:
        self.hub.notify()

    @staticmethod
    def _owned(tenant: str, text: str) -> AdapterName:
        name = parse_name(text)
        if name.tenant != tenant:
            raise NotFound(f"adapter {name} not found")
        return name

    @staticmethod
    def _owned_ref(tenant: str, text: str) -> AdapterRef:
        ref = parse_ref(text)
        if ref.adapter.tenant != tenant:
            raise NotFound(f"{ref} not found")
        return ref

    # -- push -----------------------------------------------------------------------------

    async def push(
        self, tenant: str, header: PushHeader, chunks: AsyncIterator[tuple[str, bytes]]
    ) -> VersionRecord:
        name = parse_name(header.name)
        if name.tenant != tenant:
            raise PermissionDenied(f"push adapters under your own tenant: '{tenant}/<name>'")
        manifest = self._check_header(header)
        stored: dict[str, str] = {}
        writers: dict[str, BlobWriter] = {}
        try:
            await self._receive(manifest, chunks, writers)
            if header.format is PushFormat.TAR:
                (archive,) = manifest
                writers = await self._run(self._unpack, writers.pop(archive))
            else:
                writers = {path: writers[path] for path in manifest}
            peft = await self._run(self._inspect, writers)
            reasons = incompatibilities(
                peft, header.expect_base_model, header.max_rank or self.limits.max_rank
            )
            if reasons:
                raise FailedPrecondition("; ".join(reasons))
            # Only now, checked, do the files become blobs: a refused push stores nothing.
            files = []
            for path, writer in list(writers.items()):
                digest = await self._run(writer.commit)
                del writers[path]
                stored[path] = digest
                self._inflight[digest] += 1
                files.append(FileRecord(path, writer.size, digest))
            version = await self._run(
                self.store.create_version, name, files, peft, dict(header.lineage),
                dict(header.metrics), header.description, list(header.aliases),
            )  # fmt: skip
        except BaseException:
            for writer in writers.values():
                writer.abort()
            await self._discard(set(stored.values()))
            raise
        finally:
            self._inflight.subtract(stored.values())
        self._notify()
        log.info("pushed %s@%d (%d bytes)", name, version.version, version.size_bytes)
        return version

    def _check_header(self, header: PushHeader) -> dict[str, FileRecord]:
        if not header.files:
            raise InvalidArgument("the push header lists no files")
        if len(header.files) > self.limits.max_files:
            raise InvalidArgument(f"an adapter may hold at most {self.limits.max_files} files")
        manifest: dict[str, FileRecord] = {}
        for entry in header.files:
            validate_file_path(entry.path)
            if entry.path in manifest:
                raise InvalidArgument(f"file {entry.path!r} is listed twice")
            if entry.size_bytes < 0:
                raise InvalidArgument(f"file {entry.path!r} has a negative size")
            if not _SHA256.match(entry.sha256):
                raise InvalidArgument(
                    f"file {entry.path!r} needs its sha256 as 64 lower-case hex digits"
                )
            manifest[entry.path] = entry
        total = sum(f.size_bytes for f in header.files)
        if total > self.limits.max_adapter_bytes:
            raise ResourceExhausted(
                f"adapter is {total} bytes; the limit is {self.limits.max_adapter_bytes}"
            )
        if header.format is PushFormat.TAR:
            if len(manifest) != 1 or not header.files[0].path.endswith(TAR_SUFFIXES):
                raise InvalidArgument("a TAR push sends exactly one .tar, .tar.gz or .tgz file")
        else:
            check_file_names(list(manifest))
        for alias in header.aliases:
            validate_alias(alias)
        check_metadata(
            header.lineage, header.metrics, header.description, self.limits.max_metadata_bytes
        )
        return manifest

    async def _receive(
        self,
        manifest: dict[str, FileRecord],
        chunks: AsyncIterator[tuple[str, bytes]],
        writers: dict[str, BlobWriter],
    ) -> None:
        """Spools and verifies every announced file; nothing is committed here."""
        current: str | None = None
        async for path, data in chunks:
            if path != current:
                if current is not None:
                    await self._run(writers[current].verify)
                if path not in manifest:
                    raise InvalidArgument(f"chunk for {path[:80]!r}, which the header did not list")
                if path in writers:
                    raise InvalidArgument(f"chunks of {path!r} must be sent contiguously")
                entry = manifest[path]
                writers[path] = self.blobs.writer(entry.size_bytes, entry.sha256)
                current = path
            await self._run(writers[path].write, data)
        if current is not None:
            await self._run(writers[current].verify)
        for path, entry in manifest.items():
            if path in writers:
                continue
            if entry.size_bytes:
                raise InvalidArgument(f"file {path!r} was announced but never sent")
            writers[path] = self.blobs.writer(0, entry.sha256)
            await self._run(writers[path].verify)

    def _unpack(self, archive: BlobWriter) -> dict[str, BlobWriter]:
        """Spools an archive's regular files (the archive itself is never stored); links,
        devices and odd paths refused."""
        writers: dict[str, BlobWriter] = {}
        try:
            with tarfile.open(archive.local_path, "r:*") as tar:
                members = [m for m in tar.getmembers() if not m.isdir()]
                for member in members:
                    if not member.isfile():
                        raise InvalidArgument(f"archive member {member.name!r} is not a file")
                names = [m.name.removeprefix("./") for m in members]
                prefix = _common_folder(names)
                paths = [validate_file_path(n[len(prefix) :]) for n in names]
                if len(set(paths)) != len(paths):
                    raise InvalidArgument("the archive holds the same path twice")
                if len(paths) > self.limits.max_files:
                    raise InvalidArgument(
                        f"an adapter may hold at most {self.limits.max_files} files"
                    )
                if sum(m.size for m in members) > self.limits.max_adapter_bytes:
                    raise ResourceExhausted("the unpacked adapter exceeds the size limit")
                check_file_names(paths)
                for member, path in zip(members, paths, strict=True):
                    writer = writers[path] = self.blobs.writer(member.size)
                    source = tar.extractfile(member)
                    assert source is not None
                    while data := source.read(1024 * 1024):
                        writer.write(data)
                    writer.verify()
                return writers
        except BaseException as exc:
            for writer in writers.values():
                writer.abort()
            if isinstance(exc, tarfile.TarError):
                raise InvalidArgument(f"the archive is not a readable tar file: {exc}") from None
            raise
        finally:
            archive.abort()

    def _inspect(self, writers: dict[str, BlobWriter]) -> PeftInfo:
        """Structure, then values: a NaN or huge weight would poison every engine serving it.
        Reads the spooled files, before any is committed."""
        for path, writer in writers.items():
            if path.endswith(".safetensors"):
                check_safetensors(path, writer.local_path)
                check_weight_values(writer.local_path, self.limits.max_weight_abs, label=path)
        return parse_config(writers[CONFIG_FILE].local_path)

    async def _discard(self, digests: set[str]) -> None:
        """Removes blobs this push stored, unless a version or another push uses them."""
        if not digests:
            return
        referenced = await self._run(self.store.referenced, digests)
        doomed = [d for d in digests if d not in referenced and self._inflight[d] <= 1]
        await self._run(self.blobs.delete_blobs, doomed)

    # -- reads ----------------------------------------------------------------------------

    async def get(self, tenant: str, ref: str) -> VersionRecord:
        return await self._run(self.store.resolve, self._owned_ref(tenant, ref))

    async def list_adapters(
        self, tenant: str, page_size: int, page_token: str, base_model: str = ""
    ) -> tuple[list[AdapterSummary], str]:
        """By name; the token holds the last name of the page."""
        page = Page.parse(page_size, page_token, first="", valid=lambda n: 0 < len(n) <= 128)
        items = await self._run(
            self.store.list_adapters, tenant, page.after, page.fetch, base_model
        )
        return page.cut(items, key=lambda s: s.name.name)

    async def list_versions(
        self, tenant: str, name: str, page_size: int, page_token: str
    ) -> tuple[list[VersionRecord], str]:
        """Newest first; the token holds the last version number of the page."""
        page = Page.parse(page_size, page_token, first=0, valid=lambda v: 1 <= v <= 2**31 - 1)
        adapter = self._owned(tenant, name)
        items = await self._run(self.store.list_versions, adapter, page.after, page.fetch)
        return page.cut(items, key=lambda v: v.version)

    async def download(
        self, tenant: str, ref: str, needs: Requirements = Requirements()
    ) -> tuple[VersionRecord, AsyncIterator[tuple[str, bytes]]]:
        """Resolves once, checks `needs` on that version, then streams its files."""
        version = await self._compatible(tenant, ref, needs.validate())
        return version, self._file_chunks(version)

    async def _file_chunks(self, version: VersionRecord) -> AsyncIterator[tuple[str, bytes]]:
        size = self.limits.download_chunk_bytes
        for record in version.files:
            reader = self.blobs.read_chunks(record.sha256, size)
            digest = hashlib.sha256()
            while True:
                try:
                    data = await self._run(next, reader, None)
                except BlobMissing:
                    data = None  # the hash check below reports the file as lost
                if data is None:
                    break
                digest.update(data)
                yield record.path, data
            if digest.hexdigest() != record.sha256:
                log.error(
                    "blob %s of %s@%d is corrupt", record.sha256, version.name, version.version
                )
                raise DataLoss(f"stored file {record.path!r} is corrupt; push the adapter again")

    async def check_compatibility(
        self, tenant: str, ref: str, needs: Requirements
    ) -> VersionRecord:
        return await self._compatible(tenant, ref, needs.validate())

    async def _compatible(self, tenant: str, ref: str, needs: Requirements) -> VersionRecord:
        version = await self.get(tenant, ref)
        if needs.empty:
            return version
        reasons = await self._run(
            incompatibilities, version.peft, needs.base_model, needs.max_rank,
            needs.available_modules, needs.supported_peft_types,
        )  # fmt: skip
        if reasons:
            raise FailedPrecondition(f"{version.name}@{version.version}: " + "; ".join(reasons))
        return version

    # -- aliases and deletes --------------------------------------------------------------

    async def set_alias(
        self, tenant: str, name: str, alias: str, version: int, stage_seconds: int = 0
    ) -> AliasRecord:
        adapter = self._owned(tenant, name)
        validate_alias(alias)
        if version < 1:
            raise InvalidArgument("version must be 1 or more")
        if not 0 <= stage_seconds <= 86_400:
            raise InvalidArgument("stage_seconds must be between 0 and 86400")
        record = await self._run(self.store.set_alias, adapter, alias, version, stage_seconds)
        self._notify()
        return record

    async def delete_alias(self, tenant: str, name: str, alias: str) -> None:
        adapter = self._owned(tenant, name)
        await self._run(self.store.delete_alias, adapter, validate_alias(alias))
        self._notify()

    async def delete(self, tenant: str, name: str, version: int, force: bool) -> list[int]:
        adapter = self._owned(tenant, name)
        if version < 0:
            raise InvalidArgument("version must be 0 (all) or a version number")
        deleted, orphans = await self._run(self.store.delete, adapter, version, force)
        await self._run(self.blobs.delete_blobs, [d for d in orphans if not self._inflight[d]])
        self._notify()
        return deleted

    # -- watch ----------------------------------------------------------------------------

    async def watch(
        self, tenant: str, name: str = "", after_sequence: int = 0, include_current: bool = False
    ) -> AsyncIterator[EventRecord]:
        """One tenant's events, numbered per tenant so no other tenant's activity shows."""
        adapter_name = self._owned(tenant, name).name if name else ""
        async with self.hub.subscribe({tenant}) as subscription:
            cursor, sequence = await self._run(self.store.tenant_position, tenant, after_sequence)
            if include_current:
                for alias in await self._run(self.store.aliases, [tenant], adapter_name):
                    yield _current_alias_event(alias, sequence)
            while True:  # catch up from the log; what the poller hands over is newer
                backlog = await self._run(self.store.events_after, cursor, tenant, POLL_BATCH)
                for event in backlog:
                    cursor, sequence = event.sequence, sequence + 1
                    if not adapter_name or event.name.name == adapter_name:
                        yield replace(event, sequence=sequence)
                if len(backlog) < POLL_BATCH:
                    break
            while True:
                event = await subscription.next()
                if event.sequence <= cursor:
                    continue
                cursor, sequence = event.sequence, sequence + 1
                if not adapter_name or event.name.name == adapter_name:
                    yield replace(event, sequence=sequence)

    async def watch_tenants(
        self, additions: AsyncIterator[tuple[Sequence[str], bool]]
    ) -> AsyncIterator[EventRecord]:
        """Events of every tenant a service names on `additions`, on one stream.

        Only for service principals (the edge checks): a service key may act for any
        tenant it names, so following a tenant here grants nothing it did not have, and
        the stream never carries a tenant it did not name. Sequence numbers are 0: a
        service resumes by naming its tenants again with include_current.
        """
        async with self.hub.subscribe() as subscription:
            reader = asyncio.create_task(self._follow_tenants(additions, subscription))
            try:
                while True:
                    yield replace(await subscription.next(), sequence=0)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def _follow_tenants(
        self, additions: AsyncIterator[tuple[Sequence[str], bool]], subscription: Subscription
    ) -> None:
        try:
            async for tenants, include_current in additions:
                new = [validate_identity_name(t) for t in tenants if t not in subscription.tenants]
                if len(subscription.tenants) + len(new) > MAX_WATCHED_TENANTS:
                    raise InvalidArgument(
                        f"one stream follows at most {MAX_WATCHED_TENANTS} tenants; open another"
                    )
                subscription.tenants.update(new)  # before reading aliases: nothing is missed
                if include_current and new:
                    for alias in await self._run(self.store.aliases, new):
                        subscription.add_current(_current_alias_event(alias, 0))
        except LoraplexError as error:
            subscription.fail(error)
        except Exception:
            log.exception("reading a tenant watch's requests failed")
            subscription.fail(Unavailable("the watch stopped; reconnect"))

    # -- maintenance ----------------------------------------------------------------------

    async def sweep(self, grace_seconds: float, part_grace_seconds: float) -> int:
        """Removes what dead pushes left: temp files, then blobs no version references."""
        referenced = await self._run(self.store.referenced_digests)
        pushing = {digest for digest, count in list(self._inflight.items()) if count > 0}
        return await self._run(
            self.blobs.sweep, referenced | pushing, grace_seconds, part_grace_seconds
        )


def _common_folder(names: Sequence[str]) -> str:
    """'adapter/' when every member sits in that one folder (as `tar -C .. adapter` makes)."""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1 and all("/" in n for n in names):
        return f"{tops.pop()}/"
    return ""


def _current_alias_event(alias: AliasRecord, sequence: int) -> EventRecord:
    moment = now()
    return EventRecord(
        sequence=sequence,
        kind=EventKind.ALIAS_SET,
        name=alias.name,
        version=alias.staged_version or alias.version,
        alias=alias.alias,
        previous_version=alias.version if alias.staged_version else 0,
        effective_at=alias.effective_at or moment,
        occurred_at=moment,
    )
