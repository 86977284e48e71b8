"""`BlobStore`: where every service keeps artifacts, on local/shared files or S3.

Two kinds of things live in one store, in separate namespaces:
- content-addressed blobs (`sha256/<digest>`): pushed through a `BlobWriter` that
  checks size and hash as bytes arrive and makes the blob visible only on
  `commit`; unreferenced ones and dead uploads are garbage-collected by `sweep`;
- keyed objects (`objects/<key>`, e.g. `acme/docs/gen-7/index.faiss`): `put`,
  `get`, `list` and `delete_prefix`, each atomic, for snapshots that a service
  names itself and deletes itself.

Both backends behave the same; pick one with `BlobSettings.url`
(`file:///path` or `s3://bucket/prefix`) and `open_blob_store`.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, SecretStr

from services.common.atomic import atomic_writer
from services.common.errors import InvalidArgument

SHA256 = re.compile(r"^[0-9a-f]{64}$")
_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")
MAX_KEY_CHARS = 512
DEFAULT_PART_BYTES = 16 * 1024 * 1024


class BlobMissing(LookupError):
    """A blob or object that should exist does not. Internal: callers decide what a
    client hears (the registry answers DATA_LOSS for a version whose file is gone)."""


@dataclass(frozen=True)
class ObjectInfo:
    """A keyed object as listed: its key, size and when it was last written."""

    key: str
    size_bytes: int
    modified_at: datetime


def check_key(key: str) -> str:
    """Keys are relative '/'-separated names of plain parts: no '..', no empty parts."""
    parts = key.split("/")
    if not key or len(key) > MAX_KEY_CHARS or not all(_KEY_PART.match(p) for p in parts):
        raise ValueError(
            f"object key {key[:80]!r} must be '/'-separated parts of letters, digits and ._=+-"
            f" (not starting with '.'), at most {MAX_KEY_CHARS} characters"
        )
    return key


def check_prefix(prefix: str) -> str:
    """A prefix is a key, a key ending in '/', or the start of one part."""
    if prefix:
        check_key(prefix.rstrip("/") or "x")
    return prefix


def check_digest(digest: str) -> str:
    if not SHA256.match(digest):
        raise ValueError(f"not a sha256 digest: {digest[:80]!r}")
    return digest


class BlobWriter:
    """One blob's bytes, spooled to a local temp file and checked as they arrive.

    Spooled, not streamed straight to the backend, because callers inspect what
    they received (`local_path`) before they commit it: a refused upload never
    becomes visible anywhere, on either backend.
    """

    def __init__(
        self,
        store: BlobStore,
        spool_dir: Path,
        expected_size: int,
        expected_sha256: str | None = None,
    ) -> None:
        self.store = store
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.local_path = spool_dir / f"{uuid.uuid4().hex}.part"
        store.live.add(self.local_path.name)
        self._handle = self.local_path.open("wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.digest: str | None = None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.expected_size:
            raise InvalidArgument(
                f"received more bytes than the announced size {self.expected_size}"
            )
        self._hash.update(data)
        self._handle.write(data)

    def verify(self) -> str:
        """Checks size and hash against what was announced; returns the digest.

        After this, `local_path` holds the complete bytes until commit or abort.
        """
        if self.size != self.expected_size:
            raise InvalidArgument(
                f"received {self.size} bytes but {self.expected_size} were announced"
            )
        digest = self._hash.hexdigest()
        if self.expected_sha256 is not None and digest != self.expected_sha256:
            raise InvalidArgument(
                f"sha256 mismatch: announced {self.expected_sha256}, received {digest}"
            )
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        self.digest = digest
        return digest

    def commit(self) -> str:
        """Verifies, then makes the bytes visible at their content address (idempotent:
        committing bytes already stored only refreshes the blob's age)."""
        digest = self.verify()
        try:
            self.store._commit_spool(self.local_path, digest, self.size)
        finally:
            self.local_path.unlink(missing_ok=True)
            self.store.live.discard(self.local_path.name)
        return digest

    def abort(self) -> None:
        self._handle.close()
        self.local_path.unlink(missing_ok=True)
        self.store.live.discard(self.local_path.name)


class BlobStore(ABC):
    """The protocol every service stores artifacts through; see the module docstring."""

    #: Where the store lives, for logs (`file:///…` or `s3://bucket/prefix`).
    url: str

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        spool_dir.mkdir(parents=True, exist_ok=True)
        #: Uploads running in this process (spool names, multipart ids): never swept.
        self.live: set[str] = set()

    # -- content-addressed blobs -----------------------------------------------------------

    def writer(self, expected_size: int, expected_sha256: str | None = None) -> BlobWriter:
        return BlobWriter(self, self.spool_dir, expected_size, expected_sha256)

    def push_file(self, path: Path) -> str:
        """Stores a local file as a blob; returns its digest."""
        writer = self.writer(path.stat().st_size)
        try:
            with path.open("rb") as handle:
                while data := handle.read(DEFAULT_PART_BYTES):
                    writer.write(data)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def fetch(self, digest: str, dest: Path, chunk_bytes: int = DEFAULT_PART_BYTES) -> Path:
        """Pulls a blob into a local file, atomically, refusing bytes that fail the hash."""
        hasher = hashlib.sha256()
        with atomic_writer(dest) as handle:
            for data in self.read_chunks(digest, chunk_bytes):
                hasher.update(data)
                handle.write(data)
            if hasher.hexdigest() != digest:
                raise BlobMissing(f"blob {digest} is corrupt")
        return dest

    def verify(self, digest: str) -> bool:
        """True when the blob exists and its bytes still hash to its address."""
        hasher = hashlib.sha256()
        try:
            for data in self.read_chunks(digest, DEFAULT_PART_BYTES):
                hasher.update(data)
        except BlobMissing:
            return False
        return hasher.hexdigest() == digest

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    def read_chunks(self, digest: str, chunk_bytes: int) -> Iterator[bytes]:
        """The blob's bytes in chunks of at most `chunk_bytes`; `BlobMissing` if absent."""

    @abstractmethod
    def digests(self) -> Iterator[str]: ...

    @abstractmethod
    def delete_blobs(self, digests: Iterable[str]) -> int:
        """Deletes blobs (absent ones are fine); returns how many were asked for."""

    @abstractmethod
    def sweep(self, referenced: set[str], grace_seconds: float, part_grace_seconds: float) -> int:
        """Garbage collection: deletes blobs not in `referenced` and older than
        `grace_seconds`, and uploads of other processes (temp files, multipart
        uploads) untouched for `part_grace_seconds`. Uploads live in this process are
        never touched; the grace periods protect those of other replicas."""

    @abstractmethod
    def _commit_spool(self, spool: Path, digest: str, size: int) -> None: ...

    # -- keyed objects ---------------------------------------------------------------------

    @abstractmethod
    def put(self, key: str, source: Path | bytes) -> ObjectInfo:
        """Writes (or replaces) an object; readers see the old or the new, never a part."""

    @abstractmethod
    def get(self, key: str, dest: Path) -> Path:
        """Copies an object into a local file, atomically; `BlobMissing` if absent."""

    @abstractmethod
    def read_object(self, key: str, chunk_bytes: int = DEFAULT_PART_BYTES) -> Iterator[bytes]:
        """An object's bytes in chunks; `BlobMissing` if absent."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Deletes one object; False when it was absent."""

    def read_bytes(self, key: str) -> bytes:
        return b"".join(self.read_object(key))

    def delete_prefix(self, prefix: str) -> int:
        """Deletes every object under a non-empty prefix; returns how many."""
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix")
        return sum(self.delete(info.key) for info in self.list(prefix))


# -- settings and factory --------------------------------------------------------------------


class BlobSettings(BaseModel):
    """Where one service's store lives and how to reach it."""

    #: `file:///abs/path` (or a plain path) for local/shared files;
    #: `s3://bucket/prefix` for S3-compatible object storage.
    url: str
    #: S3 endpoint (MinIO, Ceph, R2...); empty for AWS itself.
    endpoint_url: str = ""
    region: str = ""
    #: Empty: boto3's own chain (AWS_* variables, profile, web identity for IRSA).
    access_key_id: str = ""
    secret_access_key: SecretStr = SecretStr("")
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    #: Blobs larger than this go up as a multipart upload of parts this size.
    part_bytes: int = DEFAULT_PART_BYTES
    #: Send `If-None-Match: *` so a commit never overwrites; turn off for stores
    #: that refuse conditional writes (content addresses make overwrites harmless).
    conditional_writes: bool = True
    #: Tries per S3 request (boto3's standard retry mode, with backoff) before a call
    #: fails UNAVAILABLE.
    max_attempts: int = 5
    #: Local folder for uploads in progress (S3 only); empty: the system temp folder.
    #: Services default it to `tmp/` in their own data folder.
    spool_dir: Path | None = None

    @property
    def scheme(self) -> str:
        return urlparse(self.url).scheme or "file"


class BlobStoreFields(BaseModel):
    """Mixed into a service's settings: `LORAPLEX_<SERVICE>_BLOB_URL` and friends."""

    #: Empty: local files under the service's data folder.
    blob_url: str = ""
    blob_endpoint_url: str = ""
    blob_region: str = ""
    blob_access_key_id: str = ""
    blob_secret_access_key: SecretStr = SecretStr("")
    blob_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    blob_part_bytes: int = DEFAULT_PART_BYTES
    blob_conditional_writes: bool = True
    blob_max_attempts: int = 5
    #: Uploads in progress when blobs are in S3; empty: `tmp/` under the local default.
    blob_spool_dir: Path | None = None

    def blob_settings(self, default_root: Path) -> BlobSettings:
        return BlobSettings(
            url=self.blob_url or default_root.resolve().as_uri(),
            endpoint_url=self.blob_endpoint_url,
            region=self.blob_region,
            access_key_id=self.blob_access_key_id,
            secret_access_key=self.blob_secret_access_key,
            addressing_style=self.blob_addressing_style,
            part_bytes=self.blob_part_bytes,
            conditional_writes=self.blob_conditional_writes,
            max_attempts=self.blob_max_attempts,
            spool_dir=self.blob_spool_dir or default_root / "tmp",
        )


def open_blob_store(settings: BlobSettings) -> BlobStore:
    """The backend the URL names. Imports boto3 only when S3 is asked for."""
    parsed = urlparse(settings.url)
    if parsed.scheme in ("", "file"):
        from services.common.blob_local import LocalBlobStore

        return LocalBlobStore(Path(parsed.path if parsed.scheme else settings.url))
    if parsed.scheme == "s3":
        from services.common.blob_s3 import S3BlobStore

        if not parsed.netloc:
            raise ValueError(f"blob URL {settings.url!r} names no bucket: s3://bucket/prefix")
        return S3BlobStore(settings, parsed.netloc, parsed.path.strip("/"))
    raise ValueError(f"blob URL {settings.url!r}: use file:///path or s3://bucket/prefix")
