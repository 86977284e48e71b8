"""`BlobStore` on a local or shared (ReadWriteMany) folder.

Layout: `sha256/ab/abcdef…` for blobs, `objects/<key>` for keyed objects,
`tmp/` for uploads in progress. Every write goes to `tmp/`, is fsynced, then
renamed into place (and the folder fsynced), so a crash leaves at worst a temp
file or an unreferenced blob, both swept later.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from services.common.atomic import atomic_writer, fsync_dir
from services.common.blobstore import (
    DEFAULT_PART_BYTES,
    BlobMissing,
    BlobStore,
    ObjectInfo,
    check_digest,
    check_key,
    check_prefix,
)

log = logging.getLogger(__name__)


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blob_dir = root / "sha256"
        self.object_dir = root / "objects"
        self.tmp_dir = root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.object_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(self.tmp_dir)  # same file system, so commits are renames
        self.url = root.resolve().as_uri()

    def path(self, digest: str) -> Path:
        return self.blob_dir / digest[:2] / check_digest(digest)

    # -- blobs -----------------------------------------------------------------------------

    def _commit_spool(self, spool: Path, digest: str, size: int) -> None:
        target = self.path(digest)
        if target.exists():
            os.utime(target)  # fresh again, so a sweep's grace period covers this push too
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(spool, target)
        fsync_dir(target.parent)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read_chunks(self, digest: str, chunk_bytes: int) -> Iterator[bytes]:
        try:
            handle = self.path(digest).open("rb")
        except FileNotFoundError:
            raise BlobMissing(f"blob {digest} is missing") from None
        with handle:
            while chunk := handle.read(chunk_bytes):
                yield chunk

    def digests(self) -> Iterator[str]:
        for path in self.blob_dir.glob("*/*"):
            yield path.name

    def delete_blobs(self, digests: Iterable[str]) -> int:
        count = 0
        for digest in digests:
            self.path(digest).unlink(missing_ok=True)
            count += 1
        return count

    def sweep(self, referenced: set[str], grace_seconds: float, part_grace_seconds: float) -> int:
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
        for path in doomed:
            path.unlink(missing_ok=True)
        if doomed:
            log.info("swept %d orphaned blob or temp files from %s", len(doomed), self.url)
        return len(doomed)

    # -- keyed objects ---------------------------------------------------------------------

    def _object_path(self, key: str) -> Path:
        return self.object_dir / check_key(key)

    def put(self, key: str, source: Path | bytes) -> ObjectInfo:
        target = self._object_path(key)
        spool = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        self.live.add(spool.name)
        try:
            with spool.open("wb") as handle:
                if isinstance(source, bytes):
                    handle.write(source)
                else:
                    with source.open("rb") as reader:
                        shutil.copyfileobj(reader, handle, DEFAULT_PART_BYTES)
                handle.flush()
                os.fsync(handle.fileno())
            for _attempt in range(3):  # a concurrent delete may drop the emptied folder
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(spool, target)
                    break
                except FileNotFoundError:
                    continue
            fsync_dir(target.parent)
        finally:
            spool.unlink(missing_ok=True)
            self.live.discard(spool.name)
        return self._info(key, target)

    def get(self, key: str, dest: Path) -> Path:
        with atomic_writer(dest) as handle:
            for data in self.read_object(key):
                handle.write(data)
        return dest

    def read_object(self, key: str, chunk_bytes: int = DEFAULT_PART_BYTES) -> Iterator[bytes]:
        try:
            handle = self._object_path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise BlobMissing(f"object {key!r} is missing") from None
        with handle:
            while chunk := handle.read(chunk_bytes):
                yield chunk

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._object_path(key)
        return self._info(key, path) if path.is_file() else None

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        check_prefix(prefix)
        folder = self.object_dir / prefix.rsplit("/", 1)[0] if "/" in prefix else self.object_dir
        infos = []
        for path in folder.rglob("*") if folder.is_dir() else ():
            key = path.relative_to(self.object_dir).as_posix()
            if key.startswith(prefix) and path.is_file():
                try:
                    infos.append(self._info(key, path))
                except FileNotFoundError:  # deleted while we looked
                    continue
        return sorted(infos, key=lambda info: info.key)

    def delete(self, key: str) -> bool:
        path = self._object_path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        for parent in path.parents:  # drop folders left empty, so listings stay cheap
            if parent == self.object_dir:
                break
            try:
                parent.rmdir()
            except OSError:
                break
        return True

    @staticmethod
    def _info(key: str, path: Path) -> ObjectInfo:
        stat = path.stat()
        return ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))


def _older(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime <= cutoff
    except FileNotFoundError:  # committed or aborted while we looked
        return False
