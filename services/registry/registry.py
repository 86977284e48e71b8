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
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

from services.common.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from services.common.kit import Blocking
from services.common.paging import Page
from services.registry.blobs import BlobStore, BlobWriter
from services.registry.compat import incompatibilities
from services.registry.names import (
    AdapterName,
    AdapterRef,
    parse_name,
    parse_ref,
    validate_alias,
    validate_file_path,
)
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

log = logging.getLogger(__name__)
T = TypeVar("T")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


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
        self._changed = asyncio.Event()

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await self._blocking(fn, *args)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

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
            await self._receive(manifest, chunks, writers, stored)
            if header.format is PushFormat.TAR:
                (archive,) = manifest
                files = await self._run(self._unpack, writers.pop(archive), stored)
            else:
                files = [FileRecord(p, manifest[p].size_bytes, stored[p]) for p in manifest]
            peft = await self._run(self._inspect, files)
            reasons = incompatibilities(
                peft, header.expect_base_model, header.max_rank or self.limits.max_rank
            )
            if reasons:
                raise FailedPrecondition("; ".join(reasons))
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
        if len(header.description) > 2048:
            raise InvalidArgument("description is longer than 2048 characters")
        return manifest

    async def _receive(
        self,
        manifest: dict[str, FileRecord],
        chunks: AsyncIterator[tuple[str, bytes]],
        writers: dict[str, BlobWriter],
        stored: dict[str, str],
    ) -> None:
        current: str | None = None
        async for path, data in chunks:
            if path != current:
                if current is not None:
                    await self._finish(current, writers, stored, manifest)
                if path not in manifest:
                    raise InvalidArgument(f"chunk for {path[:80]!r}, which the header did not list")
                if path in writers or path in stored:
                    raise InvalidArgument(f"chunks of {path!r} must be sent contiguously")
                entry = manifest[path]
                writers[path] = self.blobs.writer(entry.size_bytes, entry.sha256)
                current = path
            await self._run(writers[path].write, data)
        if current is not None:
            await self._finish(current, writers, stored, manifest)
        for path, entry in manifest.items():
            if path in stored or path in writers:
                continue
            if entry.size_bytes:
                raise InvalidArgument(f"file {path!r} was announced but never sent")
            writers[path] = self.blobs.writer(0, entry.sha256)
            await self._finish(path, writers, stored, manifest)

    async def _finish(
        self,
        path: str,
        writers: dict[str, BlobWriter],
        stored: dict[str, str],
        manifest: dict[str, FileRecord],
    ) -> None:
        if manifest[path].path.endswith(TAR_SUFFIXES) and len(manifest) == 1:
            await self._run(writers[path].verify)  # the archive itself is never stored
            return
        writer = writers.pop(path)
        try:
            digest = await self._run(writer.commit)
        except BaseException:
            writer.abort()
            raise
        stored[path] = digest
        self._inflight[digest] += 1

    def _unpack(self, archive: BlobWriter, stored: dict[str, str]) -> list[FileRecord]:
        """Stores an archive's regular files as blobs; links, devices and odd paths refused."""
        try:
            with tarfile.open(archive.tmp_path, "r:*") as tar:
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
                files = []
                for member, path in zip(members, paths, strict=True):
                    writer = self.blobs.writer(member.size)
                    source = tar.extractfile(member)
                    assert source is not None
                    while data := source.read(1024 * 1024):
                        writer.write(data)
                    digest = writer.commit()
                    stored[path] = digest
                    self._inflight[digest] += 1
                    files.append(FileRecord(path, member.size, digest))
                return files
        except tarfile.TarError as exc:
            raise InvalidArgument(f"the archive is not a readable tar file: {exc}") from None
        finally:
            archive.abort()

    def _inspect(self, files: Sequence[FileRecord]) -> PeftInfo:
        by_path = {f.path: f for f in files}
        for record in files:
            if record.path.endswith(".safetensors"):
                check_safetensors(record.path, self.blobs.path(record.sha256))
        return parse_config(self.blobs.path(by_path[CONFIG_FILE].sha256))

    async def _discard(self, digests: set[str]) -> None:
        """Removes blobs this push stored, unless a version or another push uses them."""
        if not digests:
            return
        referenced = await self._run(self.store.referenced, digests)
        self.blobs.delete(d for d in digests if d not in referenced and self._inflight[d] <= 1)

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
        self, tenant: str, ref: str
    ) -> tuple[VersionRecord, AsyncIterator[tuple[str, bytes]]]:
        version = await self.get(tenant, ref)
        return version, self._file_chunks(version)

    async def _file_chunks(self, version: VersionRecord) -> AsyncIterator[tuple[str, bytes]]:
        size = self.limits.download_chunk_bytes
        for record in version.files:
            reader = self.blobs.read_chunks(record.sha256, size)
            digest = hashlib.sha256()
            while (data := await self._run(next, reader, None)) is not None:
                digest.update(data)
                yield record.path, data
            if digest.hexdigest() != record.sha256:
                log.error(
                    "blob %s of %s@%d is corrupt", record.sha256, version.name, version.version
                )
                raise DataLoss(f"stored file {record.path!r} is corrupt; push the adapter again")

    async def check_compatibility(
        self,
        tenant: str,
        ref: str,
        base_model: str = "",
        max_rank: int = 0,
        available_modules: Sequence[str] = (),
        supported_peft_types: Sequence[str] = (),
    ) -> VersionRecord:
        version = await self.get(tenant, ref)
        reasons = incompatibilities(
            version.peft, base_model, max_rank, available_modules, supported_peft_types
        )
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
        self.blobs.delete(d for d in orphans if not self._inflight[d])
        self._notify()
        return deleted

    # -- watch ----------------------------------------------------------------------------

    async def watch(
        self, tenant: str, name: str = "", after_sequence: int = 0, include_current: bool = False
    ) -> AsyncIterator[EventRecord]:
        adapter_name = self._owned(tenant, name).name if name else ""
        last = after_sequence or await self._run(self.store.last_sequence)
        if include_current:
            for alias in await self._run(self.store.aliases, tenant, adapter_name):
                yield _current_alias_event(alias, last)
        while True:
            changed = self._changed
            events = await self._run(self.store.events_after, tenant, last, adapter_name)
            for event in events:
                last = event.sequence
                yield event
            if not events:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), self.watch_poll_seconds)

    # -- maintenance ----------------------------------------------------------------------

    async def sweep(self, grace_seconds: float) -> int:
        referenced = await self._run(self.store.referenced_digests)
        return await self._run(self.blobs.sweep, referenced | set(self._inflight), grace_seconds)


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
