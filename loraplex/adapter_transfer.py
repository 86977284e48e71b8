"""Moving an adapter version over the registry's protocol, shared by the SDK and services.

Neither client nor server: it depends on the generated registry stubs only, so the
SDK (`loraplex.client`) and the services (training publishes, inference downloads)
push and pull the same way. Pushing: `push_header` announces every file with its
size and sha256, then `push_chunks` yields the bytes. Pulling: `VerifiedFolder`
writes a download and refuses a file the header did not announce or bytes that fail
their hash. Everything here blocks on files: services call it from their executor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from loraplex.registry.v1 import registry_service_pb2 as pb

CHUNK_BYTES = 1024 * 1024
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class IntegrityError(ValueError):
    """The stream broke the protocol or a file failed its hash."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def adapter_files(source: Path) -> list[tuple[str, Path]]:
    """(relative path, file) pairs of a PEFT folder, or the one archive given."""
    if source.is_file():
        return [(source.name, source)]
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is neither an adapter folder nor an archive")
    return sorted(
        (p.relative_to(source).as_posix(), p)
        for p in source.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts)
    )


def push_header(
    name: str,
    source: Path,
    files: Sequence[tuple[str, Path]],
    *,
    lineage: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    aliases: Sequence[str] = (),
    description: str = "",
    expect_base_model: str = "",
    max_rank: int = 0,
) -> pb.PushHeader:
    """The first push message: every file of `files` with its size and sha256 (hashes them)."""
    is_tar = source.is_file() and source.name.endswith(TAR_SUFFIXES)
    return pb.PushHeader(
        name=name,
        format=pb.PUSH_FORMAT_TAR if is_tar else pb.PUSH_FORMAT_FILES,
        files=[
            pb.FileManifest(path=rel, size_bytes=p.stat().st_size, sha256=sha256_file(p))
            for rel, p in files
        ],
        lineage=dict(lineage or {}),
        metrics=dict(metrics or {}),
        aliases=list(aliases),
        description=description,
        expect_base_model=expect_base_model,
        max_rank=max_rank,
    )


def push_chunks(files: Sequence[tuple[str, Path]]) -> Iterator[pb.PushAdapterRequest]:
    """The push messages after the header, one chunk of one file each."""
    for rel, path in files:
        with path.open("rb") as handle:
            while data := handle.read(CHUNK_BYTES):
                yield pb.PushAdapterRequest(chunk=pb.FileChunk(path=rel, data=data))


class VerifiedFolder:
    """Writes a downloaded version into `folder`, checking each file against the header."""

    def __init__(self, version: pb.AdapterVersion, folder: Path) -> None:
        self.version = version
        self.folder = folder
        self.expected = {f.path: f for f in version.files}
        self.total = sum(f.size_bytes for f in version.files)
        self.done = 0
        self._hashes: dict[str, Any] = {}

    def write(self, path: str, data: bytes) -> None:
        if path not in self.expected:
            raise IntegrityError(f"the download sent {path[:80]!r}, which it did not announce")
        target = self.folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("ab") as handle:
            handle.write(data)
        self._hashes.setdefault(path, hashlib.sha256()).update(data)
        self.done += len(data)

    def finish(self) -> None:
        """Checks every announced file (empty ones included) against its sha256."""
        for path, info in self.expected.items():
            digest = self._hashes.get(path, hashlib.sha256()).hexdigest()
            if digest != info.sha256:
                raise IntegrityError(
                    f"{self.version.name}@{self.version.version}: {path} failed its sha256 check"
                )
            (self.folder / path).touch()
