"""Dataset uploads: stream to a temp file, check size and hash, validate, then keep it.

A dataset is stored only once every row has passed validation, so a job never
starts on a file that would fail half-way through.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path

from services.common import inputs
from services.common.atomic import fsync_dir
from services.common.errors import InvalidArgument
from services.training.datasets import FORMATS, validate_jsonl
from services.training.settings import TrainingSettings
from services.training.store import DatasetRecord, TrainingStore

log = logging.getLogger(__name__)


class DatasetManager:
    """Owns `<data>/training/datasets/<tenant>/<id>.jsonl` and the dataset records."""

    def __init__(self, settings: TrainingSettings, store: TrainingStore) -> None:
        self.store = store
        self.root = settings.service_dir("training") / "datasets"
        self.max_bytes = settings.max_dataset_bytes
        self.max_row_bytes = settings.max_row_bytes

    def path(self, record: DatasetRecord) -> Path:
        return self.root / record.tenant / f"{record.id}.jsonl"

    def begin(self, tenant: str, name: str, fmt: str, size: int, sha256: str) -> Upload:
        """Checks the header and opens a temp file next to where the dataset will live."""
        if "/" in inputs.check_name(name, "dataset name", 200):
            raise InvalidArgument("dataset name must be 1-200 characters without '/'")
        if fmt and fmt not in FORMATS:
            raise InvalidArgument(f"format must be one of {', '.join(FORMATS)}")
        if size > self.max_bytes:
            raise InvalidArgument(f"dataset is over the {self.max_bytes}-byte limit")
        folder = self.root / tenant
        folder.mkdir(parents=True, exist_ok=True)
        return Upload(tenant, name, fmt, size, sha256, folder, self.max_bytes)

    def finish(self, upload: Upload) -> DatasetRecord:
        """Validates every row, then moves the file into place and records it."""
        try:
            upload.close()
            if upload.size and upload.received != upload.size:
                raise InvalidArgument(
                    f"header announced {upload.size} bytes but {upload.received} arrived"
                )
            if upload.sha256 and upload.digest.hexdigest() != upload.sha256.lower():
                raise InvalidArgument("sha256 mismatch: the upload was corrupted; send it again")
            summary = validate_jsonl(upload.tmp, upload.fmt, self.max_row_bytes)
            record = DatasetRecord(
                id="ds-" + uuid.uuid4().hex[:20],
                tenant=upload.tenant,
                name=upload.name,
                format=summary.format,
                rows=summary.rows,
                size_bytes=summary.size_bytes,
                sha256=summary.sha256,
                created_at=time.time(),
            )
            os.replace(upload.tmp, self.path(record))
            fsync_dir(upload.tmp.parent)
            try:
                self.store.add_dataset(record)
            except Exception:
                self.path(record).unlink(missing_ok=True)
                raise
        finally:
            upload.abort()
        log.info("tenant %s stored dataset %s (%d rows)", record.tenant, record.id, record.rows)
        return record


class Upload:
    """One upload in progress: bytes counted and hashed as they arrive."""

    def __init__(
        self, tenant: str, name: str, fmt: str, size: int, sha256: str, folder: Path, limit: int
    ) -> None:
        self.tenant, self.name, self.fmt, self.size, self.sha256 = tenant, name, fmt, size, sha256
        self.limit = limit
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".tmp")
        self.tmp = Path(tmp_name)
        self.handle = os.fdopen(fd, "wb")
        self.digest = hashlib.sha256()
        self.received = 0

    def write(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            self.abort()
            raise InvalidArgument(f"dataset is over the {self.limit}-byte limit")
        self.digest.update(chunk)
        self.handle.write(chunk)

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()

    def abort(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        self.tmp.unlink(missing_ok=True)
