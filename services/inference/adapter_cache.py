"""Adapter files on local disk, keyed by content digest, evicted least-recently-used.

Each entry is written into a temp folder and renamed into place once every file
has passed its hash check, so a crash never leaves a half adapter that looks whole.
Folder walks and deletes run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import uuid
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class AdapterDiskCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.tmp = root / "tmp"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        entries = sorted(
            (p for p in root.iterdir() if p.is_dir() and p.name != "tmp"),
            key=lambda p: p.stat().st_mtime,
        )
        self._sizes: OrderedDict[str, int] = OrderedDict(
            (p.name, _folder_bytes(p)) for p in entries
        )

    @property
    def size_bytes(self) -> int:
        return sum(self._sizes.values())

    def get(self, digest: str) -> Path | None:
        if digest not in self._sizes:
            return None
        self._sizes.move_to_end(digest)
        return self.root / digest

    def staging(self) -> Path:
        path = self.tmp / uuid.uuid4().hex
        path.mkdir()
        return path

    async def commit(self, digest: str, staged: Path) -> Path:
        target = self.root / digest
        size = await asyncio.to_thread(_place, staged, target)  # file work off the loop
        self._sizes[digest] = size
        self._sizes.move_to_end(digest)
        return target

    async def evict_over_limit(self, keep: set[str]) -> list[str]:
        """Drops the oldest entries beyond the byte limit; returns their digests."""
        evicted = []
        for digest in list(self._sizes):
            if self.size_bytes <= self.max_bytes:
                break
            if digest in keep:
                continue
            del self._sizes[digest]
            evicted.append(digest)
        if evicted:
            folders = [self.root / d for d in evicted]
            await asyncio.to_thread(_remove, folders)
            log.info("evicted %d adapters from the disk cache", len(evicted))
        return evicted


def _place(staged: Path, target: Path) -> int:
    """Renames a verified staging folder into place, or drops it when the same digest is
    already there: two adapter versions with the same bytes load at once, and whichever
    rename lands second finds the folder full (checking first would race the other)."""
    try:
        os.replace(staged, target)
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not target.is_dir():
            raise
        shutil.rmtree(staged, ignore_errors=True)
    return _folder_bytes(target)


def _remove(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
