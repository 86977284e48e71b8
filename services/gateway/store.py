"""The gateway's own records: OpenAI platform objects that have no loraplex counterpart.

Files (a fine-tune file points at its training dataset; any other file keeps its
bytes here until a vector store takes it), which files each vector store holds, and
the OpenAI-only fields of fine-tuning jobs (suffix, metadata, file ids). SQLite by
default, PostgreSQL by URL for replicas. Every read takes the tenant: another
tenant's record answers NOT_FOUND exactly like an absent one.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)

from services.common.errors import NotFound

metadata = MetaData()

files_table = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("purpose", String(32), nullable=False),
    Column("filename", String(512), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    #: The training dataset a fine-tune file became; empty for other purposes.
    Column("dataset_id", String(64), nullable=False, default=""),
    #: The bytes of a file a vector store may take; NULL for fine-tune files.
    Column("content", LargeBinary, nullable=True),
)

vector_store_files_table = Table(
    "vector_store_files",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("vector_store", String(128), primary_key=True),
    Column("file_id", String(40), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("attributes", Text, nullable=False, default="{}"),
    Column("last_error", Text, nullable=False, default=""),
)

job_extras_table = Table(
    "fine_tuning_jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("model", String(256), nullable=False),
    Column("training_file", String(40), nullable=False),
    Column("validation_file", String(40), nullable=False, default=""),
    Column("suffix", String(64), nullable=False, default=""),
    Column("seed", Integer, nullable=True),
    Column("metadata", Text, nullable=False, default="{}"),
    Column("method", Text, nullable=False, default="{}"),
)


@dataclass(frozen=True)
class FileRecord:
    id: str
    tenant: str
    purpose: str
    filename: str
    bytes: int
    created_at: float
    dataset_id: str = ""


@dataclass(frozen=True)
class VectorStoreFile:
    vector_store: str
    file_id: str
    status: str
    bytes: int
    created_at: float
    attributes: dict[str, Any] = field(default_factory=dict)
    last_error: str = ""


@dataclass(frozen=True)
class JobExtras:
    id: str
    model: str
    training_file: str
    validation_file: str = ""
    suffix: str = ""
    seed: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex[:24]}"


class GatewayStore:
    """Blocking: call through the kit's executor."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    # -- files ------------------------------------------------------------------------

    def add_file(self, record: FileRecord, content: bytes | None) -> None:
        row = {**record.__dict__, "content": content}
        with self.engine.begin() as db:
            db.execute(insert(files_table).values(**row))

    def get_file(self, tenant: str, file_id: str) -> FileRecord:
        with self.engine.connect() as db:
            row = db.execute(
                select(*_file_columns()).where(_mine(files_table, tenant, file_id))
            ).first()
        if row is None:
            raise NotFound(f"no file {file_id[:64]!r}")
        return FileRecord(**row._mapping)

    def file_content(self, tenant: str, file_id: str) -> bytes | None:
        with self.engine.connect() as db:
            row = db.execute(
                select(files_table.c.content).where(_mine(files_table, tenant, file_id))
            ).first()
        if row is None:
            raise NotFound(f"no file {file_id[:64]!r}")
        return row.content

    def list_files(
        self, tenant: str, purpose: str, after: str, limit: int, newest_first: bool
    ) -> list[FileRecord]:
        t = files_table
        query = select(*_file_columns()).where(t.c.tenant == tenant)
        if purpose:
            query = query.where(t.c.purpose == purpose)
        order = (t.c.created_at.desc(), t.c.id.desc()) if newest_first else (t.c.created_at, t.c.id)
        if after:
            anchor = self.get_file(tenant, after)
            if newest_first:
                query = query.where(
                    (t.c.created_at < anchor.created_at)
                    | and_(t.c.created_at == anchor.created_at, t.c.id < anchor.id)
                )
            else:
                query = query.where(
                    (t.c.created_at > anchor.created_at)
                    | and_(t.c.created_at == anchor.created_at, t.c.id > anchor.id)
                )
        with self.engine.connect() as db:
            rows = db.execute(query.order_by(*order).limit(limit)).all()
        return [FileRecord(**r._mapping) for r in rows]

    def delete_file(self, tenant: str, file_id: str) -> None:
        with self.engine.begin() as db:
            gone = db.execute(delete(files_table).where(_mine(files_table, tenant, file_id)))
        if not gone.rowcount:
            raise NotFound(f"no file {file_id[:64]!r}")

    # -- vector store files -----------------------------------------------------------

    def put_store_file(self, tenant: str, item: VectorStoreFile) -> None:
        t = vector_store_files_table
        row = {**item.__dict__, "tenant": tenant, "attributes": json.dumps(item.attributes)}
        with self.engine.begin() as db:
            db.execute(
                delete(t).where(
                    and_(
                        t.c.tenant == tenant,
                        t.c.vector_store == item.vector_store,
                        t.c.file_id == item.file_id,
                    )
                )
            )
            db.execute(insert(t).values(**row))

    def set_store_file_status(
        self, tenant: str, vector_store: str, file_id: str, status: str, error: str = ""
    ) -> None:
        t = vector_store_files_table
        with self.engine.begin() as db:
            db.execute(
                update(t)
                .where(
                    and_(
                        t.c.tenant == tenant,
                        t.c.vector_store == vector_store,
                        t.c.file_id == file_id,
                    )
                )
                .values(status=status, last_error=error)
            )

    def store_files(
        self, tenant: str, vector_store: str, file_id: str = ""
    ) -> list[VectorStoreFile]:
        t = vector_store_files_table
        query = select(t).where(and_(t.c.tenant == tenant, t.c.vector_store == vector_store))
        if file_id:
            query = query.where(t.c.file_id == file_id)
        with self.engine.connect() as db:
            rows = db.execute(query.order_by(t.c.created_at, t.c.file_id)).all()
        return [
            VectorStoreFile(
                r.vector_store,
                r.file_id,
                r.status,
                r.bytes,
                r.created_at,
                json.loads(r.attributes),
                r.last_error,
            )
            for r in rows
        ]

    def file_counts(self, tenant: str, vector_store: str) -> dict[str, int]:
        t = vector_store_files_table
        with self.engine.connect() as db:
            rows = db.execute(
                select(t.c.status, func.count())
                .where(and_(t.c.tenant == tenant, t.c.vector_store == vector_store))
                .group_by(t.c.status)
            ).all()
        return {status: count for status, count in rows}

    def drop_store_files(self, tenant: str, vector_store: str, file_id: str = "") -> int:
        t = vector_store_files_table
        where = and_(t.c.tenant == tenant, t.c.vector_store == vector_store)
        if file_id:
            where = and_(where, t.c.file_id == file_id)
        with self.engine.begin() as db:
            return db.execute(delete(t).where(where)).rowcount

    # -- fine-tuning jobs -------------------------------------------------------------

    def add_job(self, tenant: str, extras: JobExtras) -> None:
        row = {
            **extras.__dict__,
            "tenant": tenant,
            "metadata": json.dumps(extras.metadata),
            "method": json.dumps(extras.method),
        }
        with self.engine.begin() as db:
            db.execute(insert(job_extras_table).values(**row))

    def job_extras(self, tenant: str, job_ids: list[str]) -> dict[str, JobExtras]:
        t = job_extras_table
        with self.engine.connect() as db:
            rows = db.execute(
                select(t).where(and_(t.c.tenant == tenant, t.c.id.in_(job_ids)))
            ).all()
        return {
            r.id: JobExtras(
                r.id,
                r.model,
                r.training_file,
                r.validation_file,
                r.suffix,
                r.seed,
                json.loads(r.metadata),
                json.loads(r.method),
            )
            for r in rows
        }


def _file_columns() -> list[Column]:
    return [c for c in files_table.c if c.name != "content"]


def _mine(table: Table, tenant: str, key: str):  # type: ignore[no-untyped-def]
    return and_(table.c.tenant == tenant, table.c.id == key)


def now() -> float:
    return time.time()
