"""Content-addressed blob files: written to a temp file, hashed, fsynced, renamed into place.

A blob becomes visible to clients only through a committed database row, so a
crash mid-write leaves at worst a temp file or an unreferenced blob, both swept
at start-up and then on a timer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from services.common.atomic import fsync_dir
from services.common.errors import InvalidArgument

log = logging.getLogger(__name__)


class BlobWriter:
    """Accumulates one file's bytes, checking size and hash as they arrive."""

    def __init__(
        self, store: BlobStore, expected_size: int, expected_sha256: str | None = None
    ) -> None:
        self.store = store
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.tmp_path = store.tmp_dir / f"{uuid.uuid4().hex}.part"
        store.live.add(self.tmp_path.name)
        self._handle = self.tmp_path.open("wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.expected_size:
            raise InvalidArgument(
                f"received more bytes than the announced size {self.expected_size}"
            )
        self._hash.update(data)
        self._handle.write(data)

    def verify(self) -> str:
        """Checks size and hash against what was announced; returns the digest."""
        if self.size != self.expected_size:
            raise InvalidArgument(
                f"received {self.size} bytes but {self.expected_size} were announced"
            )
        digest = self._hash.hexdigest()
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            raise InvalidArgument(
                f"sha256 mismatch: announced {self.expected_sha256}, received {digest}"
            )
        return digest

    def commit(self) -> str:
        """Verifies, then durably moves the bytes to their content address."""
        digest = self.verify()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        target = self.store.path(digest)
        if target.exists():
            self.tmp_path.unlink()
            os.utime(target)  # fresh again, so a sweep's grace period covers this push too
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.tmp_path, target)
            fsync_dir(target.parent)
        self.store.live.discard(self.tmp_path.name)
        return digest

    def abort(self) -> None:
        self._handle.close()
        self.tmp_path.unlink(missing_ok=True)
        self.store.live.discard(self.tmp_path.name)


class BlobStore:
    """Files under `<root>/sha256/ab/abcdef…`, temp files under `<root>/tmp`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "sha256"
        self.tmp_dir = root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        #: Temp files of pushes running in this process: never swept, however slow.
        self.live: set[str] = set()

    def path(self, digest: str) -> Path:
        return self.blob_dir / digest[:2] / digest

    def writer(self, expected_size: int, expected_sha256: str | None = None) -> BlobWriter:
        return BlobWriter(self, expected_size, expected_sha256)

    def read_chunks(self, digest: str, chunk_bytes: int) -> Iterator[bytes]:
        with self.path(digest).open("rb") as handle:
            while chunk := handle.read(chunk_bytes):
                yield chunk

    def digests(self) -> Iterator[str]:
        for path in self.blob_dir.glob("*/*"):
            yield path.name

    def delete(self, digests: Iterable[str]) -> None:
        for digest in digests:
            self.path(digest).unlink(missing_ok=True)

    def sweep(self, referenced: set[str], grace_seconds: float, part_grace_seconds: float) -> int:
        """Deletes temp files not written for `part_grace_seconds` and not of a live push
        here, and unreferenced blobs older than `grace_seconds`.

        The grace periods protect pushes on other replicas sharing the storage.
        """
        now = time.time()
        doomed = [
            path
            for path in self.tmp_dir.iterdir()
            if path.name not in self.live and _older(path, now - part_grace_seconds)
        ]
        doomed += [
            path
            for path in self.blob_dir.glob("*/*")
            if path.name not in referenced and _older(path, now - grace_seconds)
        ]
        removed = 0
        for path in doomed:
            path.unlink(missing_ok=True)
            removed += 1
        if removed:
            log.info("swept %d orphaned blob or temp files", removed)
        return removed


def _older(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime <= cutoff
    except FileNotFoundError:  # committed or aborted while we looked
        return False
