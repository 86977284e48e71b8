"""`BlobStore` on S3-compatible object storage (AWS S3, MinIO, Ceph, R2...) via boto3.

Keys: `<prefix>/sha256/<digest>` for blobs, `<prefix>/objects/<key>` for keyed
objects. A PUT or a completed multipart upload is atomic in S3, so nothing is
visible before its commit; large blobs go up in parts. A commit is conditional
(`If-None-Match: *`) and idempotent: bytes already at their content address are
not sent again, only their age refreshed (a copy in place), so a sweep's grace
period covers the new reference too. Dead uploads are local spool files and
multipart uploads never completed; `sweep` removes both after their grace period.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import inspect
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from services.common.atomic import atomic_writer
from services.common.blobstore import (
    DEFAULT_PART_BYTES,
    BlobMissing,
    BlobSettings,
    BlobStore,
    ObjectInfo,
    check_digest,
    check_key,
    check_prefix,
)
from services.common.errors import Unavailable

log = logging.getLogger(__name__)
#: S3 refuses a copy in place above this; such blobs keep their first age.
MAX_COPY_BYTES = 5 * 1024**3
_MISSING = {"404", "NoSuchKey", "NotFound"}
_BUSY = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """A store that cannot be reached, or answers 5xx, is UNAVAILABLE (retry later), not
    an INTERNAL error; the message names nothing of the deployment."""
    try:
        yield
    except (BotoConnectionError, HTTPClientError) as error:
        log.warning("object storage unreachable: %s", error)
        raise Unavailable("object storage is unreachable; retry shortly") from error
    except ClientError as error:
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500 or _code(error) in _BUSY:
            log.warning("object storage busy or failing: %s", error)
            raise Unavailable("object storage is busy or failing; retry shortly") from error
        raise


def _guarded(method: Callable) -> Callable:
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(*args, **kwargs):
            with _reachable():
                yield from method(*args, **kwargs)

        return generator

    @functools.wraps(method)
    def call(*args, **kwargs):
        with _reachable():
            return method(*args, **kwargs)

    return call


class S3BlobStore(BlobStore):
    def __init__(self, settings: BlobSettings, bucket: str, prefix: str) -> None:
        spool = settings.spool_dir or Path(tempfile.gettempdir()) / "loraplex-blob-spool"
        super().__init__(spool)
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"s3://{bucket}/{prefix}"
        self.part_bytes = max(settings.part_bytes, 5 * 1024 * 1024)  # S3's smallest part
        self.conditional = settings.conditional_writes
        #: Multipart uploads of other processes: when a sweep first saw each.
        self._seen: dict[str, float] = {}
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key_id or None,
            aws_secret_access_key=settings.secret_access_key.get_secret_value() or None,
            region_name=settings.region or None,
        )
        self.client = session.client(
            "s3",
            endpoint_url=settings.endpoint_url or None,
            config=Config(
                retries={"max_attempts": settings.max_attempts, "mode": "standard"},
                s3={"addressing_style": settings.addressing_style},
                # S3-compatible stores differ on the newer default checksums; we send
                # our own SHA-256 where it matters.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def _blob_key(self, digest: str) -> str:
        return f"{self.prefix}sha256/{check_digest(digest)}"

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}objects/{check_key(key)}"

    # -- blobs -----------------------------------------------------------------------------

    @_guarded
    def _commit_spool(self, spool: Path, digest: str, size: int) -> None:
        key = self._blob_key(digest)
        head = self._head(key)
        if head is not None:
            self._touch(key, head)
            return
        if not self._upload(key, spool, size, digest):
            self._touch(key, self._head(key))  # another replica committed the same bytes

    def _upload(self, key: str, source: Path, size: int, digest: str | None) -> bool:
        """Uploads a local file; False when a conditional write found the key taken."""
        metadata = {"sha256": digest} if digest else {}
        condition = {"IfNoneMatch": "*"} if self.conditional and digest else {}
        try:
            if size <= self.part_bytes:
                extra = {}
                if digest:  # the server checks the bytes it received against this
                    extra["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(digest)).decode()
                with source.open("rb") as body:
                    self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=body, Metadata=metadata,
                        **condition, **extra,
                    )  # fmt: skip
            else:
                self._multipart(key, source, metadata, condition)
        except ClientError as error:
            if _code(error) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def _multipart(self, key: str, source: Path, metadata: dict, condition: dict) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=metadata)
        upload_id = upload["UploadId"]
        self.live.add(upload_id)
        try:
            parts = []
            with source.open("rb") as handle:
                number = 1
                while data := handle.read(self.part_bytes):
                    part = self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id,
                        PartNumber=number, Body=data,
                    )  # fmt: skip
                    parts.append({"PartNumber": number, "ETag": part["ETag"]})
                    number += 1
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": parts}, **condition,
            )  # fmt: skip
        except BaseException:
            self._abort_upload(key, upload_id)
            raise
        finally:
            self.live.discard(upload_id)

    def _abort_upload(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError:
            log.warning("could not abort multipart upload of %s; a sweep will", key)

    def _touch(self, key: str, head: dict | None) -> None:
        """Refreshes an object's age with a copy in place (S3 has no utime)."""
        if head is None or head["ContentLength"] > MAX_COPY_BYTES:
            return
        self.client.copy_object(
            Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": key},
            Metadata=head.get("Metadata", {}), MetadataDirective="REPLACE",
        )  # fmt: skip

    def _head(self, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) in _MISSING:
                return None
            raise

    @_guarded
    def exists(self, digest: str) -> bool:
        return self._head(self._blob_key(digest)) is not None

    def read_chunks(self, digest: str, chunk_bytes: int) -> Iterator[bytes]:
        return self._read(self._blob_key(digest), chunk_bytes, f"blob {digest}")

    @_guarded
    def _read(self, key: str, chunk_bytes: int, label: str) -> Iterator[bytes]:
        """A generator, so the request goes out on the first `next`, on the caller's thread."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as error:
            if _code(error) in _MISSING:
                raise BlobMissing(f"{label} is missing") from None
            raise
        try:
            yield from body.iter_chunks(chunk_bytes)
        finally:
            body.close()

    def _listing(self, prefix: str) -> Iterator[dict]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", ())

    @_guarded
    def digests(self) -> Iterator[str]:
        start = len(f"{self.prefix}sha256/")
        for item in self._listing(f"{self.prefix}sha256/"):
            yield item["Key"][start:]

    @_guarded
    def delete_blobs(self, digests: Iterable[str]) -> int:
        return self._delete_keys([self._blob_key(d) for d in digests])

    def _delete_keys(self, keys: list[str]) -> int:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            answer = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise OSError(f"deleting {first.get('Key')} failed: {first.get('Message')}")
        return len(keys)

    @_guarded
    def sweep(self, referenced: set[str], grace_seconds: float, part_grace_seconds: float) -> int:
        now = datetime.now(UTC)
        start = len(f"{self.prefix}sha256/")
        doomed = [
            item["Key"]
            for item in self._listing(f"{self.prefix}sha256/")
            if item["Key"][start:] not in referenced
            and item["LastModified"] <= now - timedelta(seconds=grace_seconds)
        ]
        removed = self._delete_keys(doomed)
        removed += self._sweep_uploads(
            now - timedelta(seconds=part_grace_seconds), part_grace_seconds
        )
        removed += self._sweep_spool(time.time() - part_grace_seconds)
        if removed:
            log.info("swept %d orphaned blobs or dead uploads from %s", removed, self.url)
        return removed

    def _sweep_uploads(self, cutoff: datetime, grace_seconds: float) -> int:
        """Aborts uploads initiated before `cutoff` that this process has also seen for
        `grace_seconds`: the store's `Initiated` alone is not trusted (clock skew; moto,
        the emulator, reports a fixed date in 2010)."""
        removed = 0
        clock = time.monotonic()
        listed: set[str] = set()
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for upload in page.get("Uploads", ()):
                upload_id = upload["UploadId"]
                listed.add(upload_id)
                seen = self._seen.setdefault(upload_id, clock)
                if upload_id in self.live or upload["Initiated"] > cutoff:
                    continue
                if seen > clock - grace_seconds:
                    continue
                self._abort_upload(upload["Key"], upload_id)
                removed += 1
        self._seen = {k: v for k, v in self._seen.items() if k in listed}
        return removed

    def _sweep_spool(self, cutoff: float) -> int:
        removed = 0
        for path in self.spool_dir.iterdir():
            try:
                if path.name not in self.live and path.stat().st_mtime <= cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # committed or aborted while we looked
                continue
        return removed

    # -- keyed objects ---------------------------------------------------------------------

    @_guarded
    def put(self, key: str, source: Path | bytes) -> ObjectInfo:
        target = self._object_key(key)
        if isinstance(source, bytes):
            spool = self.spool_dir / f"{uuid.uuid4().hex}.part"
            self.live.add(spool.name)
            try:
                spool.write_bytes(source)
                self._upload(target, spool, len(source), None)
            finally:
                spool.unlink(missing_ok=True)
                self.live.discard(spool.name)
        else:
            self._upload(target, source, os.path.getsize(source), None)
        info = self.stat(key)
        assert info is not None
        return info

    @_guarded
    def get(self, key: str, dest: Path) -> Path:
        with atomic_writer(dest) as handle:
            for data in self.read_object(key):
                handle.write(data)
        return dest

    def read_object(self, key: str, chunk_bytes: int = DEFAULT_PART_BYTES) -> Iterator[bytes]:
        return self._read(self._object_key(key), chunk_bytes, f"object {key!r}")

    @_guarded
    def stat(self, key: str) -> ObjectInfo | None:
        head = self._head(self._object_key(key))
        if head is None:
            return None
        return ObjectInfo(key, head["ContentLength"], head["LastModified"])

    @_guarded
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        start = len(f"{self.prefix}objects/")
        infos = [
            ObjectInfo(item["Key"][start:], item["Size"], item["LastModified"])
            for item in self._listing(f"{self.prefix}objects/{check_prefix(prefix)}")
        ]
        return sorted(infos, key=lambda info: info.key)

    @_guarded
    def delete(self, key: str) -> bool:
        target = self._object_key(key)
        if self._head(target) is None:
            return False
        self.client.delete_object(Bucket=self.bucket, Key=target)
        return True

    @_guarded
    def delete_prefix(self, prefix: str) -> int:
        if not prefix:
            raise ValueError("delete_prefix needs a non-empty prefix")
        return self._delete_keys([self._object_key(info.key) for info in self.list(prefix)])


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
