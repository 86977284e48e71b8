"""Durable state: datasets, jobs and each job's numbered event log (SQLite or PostgreSQL).

Every read takes the caller's tenant and answers NOT_FOUND for anything the tenant
does not own, so a check cannot be forgotten at the edge.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    func,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError

from services.common.errors import AlreadyExists, NotFound
from services.common.migrations import Schema, upgrade

metadata = MetaData()
#: Alembic revisions of these tables (services/training/migrations).
SCHEMA = Schema("training", Path(__file__).with_name("migrations"), marker_table="jobs")
#: The paging position before the newest row: (created_at, id) pages run newest first.
NEWEST_FIRST: tuple[float, str] = (math.inf, "")

datasets_table = Table(
    "datasets",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("name", String(256), nullable=False),
    Column("format", String(32), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant", "name"),
)

jobs_table = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("spec", Text, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("step", Integer, nullable=False, default=0),
    Column("total_steps", Integer, nullable=False, default=0),
    Column("metrics", Text, nullable=False, default="{}"),
    Column("failure_reason", Text, nullable=False, default=""),
    Column("adapter_ref", String(256), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("events_offset", Integer, nullable=False, default=0),
)

events_table = Table(
    "job_events",
    metadata,
    Column("job_id", String(40), primary_key=True),
    Column("sequence", Integer, primary_key=True),
    Column("time", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", Text, nullable=False),
)

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled")


@dataclass
class DatasetRecord:
    id: str
    tenant: str
    name: str
    format: str
    rows: int
    size_bytes: int
    sha256: str
    created_at: float


@dataclass
class JobRecord:
    id: str
    tenant: str
    spec: dict[str, Any]
    state: str
    step: int = 0
    total_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    failure_reason: str = ""
    adapter_ref: str = ""
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    cancel_requested: bool = False
    events_offset: int = 0
    queue_position: int = 0


@dataclass
class EventRecord:
    job_id: str
    sequence: int
    time: float
    kind: str
    payload: dict[str, Any]


def _job(row: Any) -> JobRecord:
    data = dict(row._mapping)
    data["spec"] = json.loads(data["spec"])
    data["metrics"] = json.loads(data["metrics"])
    return JobRecord(**data)


class TrainingStore:
    """Datasets, jobs and events; safe to share between the RPC loop's threads."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        upgrade(engine, SCHEMA)

    # Datasets
    def add_dataset(self, record: DatasetRecord) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(datasets_table.insert().values(**record.__dict__))
        except IntegrityError:
            raise AlreadyExists(
                f"a dataset named {record.name!r} already exists; pick another name"
            ) from None

    def get_dataset(self, tenant: str, dataset_id: str) -> DatasetRecord:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(datasets_table).where(
                    datasets_table.c.id == dataset_id, datasets_table.c.tenant == tenant
                )
            ).first()
        if row is None:
            raise NotFound(f"dataset {dataset_id!r} not found")
        return DatasetRecord(**row._mapping)

    def list_datasets(
        self, tenant: str, after: tuple[float, str], limit: int
    ) -> list[DatasetRecord]:
        return [
            DatasetRecord(**r._mapping) for r in self._page(datasets_table, tenant, after, limit)
        ]

    # Jobs
    def create_job(self, tenant: str, spec: dict[str, Any]) -> JobRecord:
        record = JobRecord(
            id="job-" + uuid.uuid4().hex[:20],
            tenant=tenant,
            spec=spec,
            state="queued",
            created_at=time.time(),
        )
        values = {k: v for k, v in record.__dict__.items() if k != "queue_position"}
        values["spec"] = json.dumps(spec)
        values["metrics"] = "{}"
        with self.engine.begin() as conn:
            conn.execute(jobs_table.insert().values(**values))
        return record

    def get_job(self, tenant: str, job_id: str) -> JobRecord:
        record = self.find_job(job_id)
        if record is None or record.tenant != tenant:
            raise NotFound(f"job {job_id!r} not found")
        return record

    def find_job(self, job_id: str) -> JobRecord | None:
        """Any tenant's job: for the scheduler only, never for a caller's lookup."""
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).first()
        if row is None:
            return None
        record = _job(row)
        record.queue_position = self.queue_position(record)
        return record

    def list_jobs(self, tenant: str, after: tuple[float, str], limit: int) -> list[JobRecord]:
        records = [_job(r) for r in self._page(jobs_table, tenant, after, limit)]
        for record in records:
            record.queue_position = self.queue_position(record)
        return records

    def jobs_in_state(self, state: str) -> list[JobRecord]:
        """Oldest first: the queue order."""
        query = (
            select(jobs_table)
            .where(jobs_table.c.state == state)
            .order_by(jobs_table.c.created_at, jobs_table.c.id)
        )
        with self.engine.connect() as conn:
            return [_job(r) for r in conn.execute(query)]

    def queue_position(self, record: JobRecord) -> int:
        """1 + the tenant's own queued jobs ahead: other tenants' jobs are not theirs to count."""
        if record.state != "queued":
            return 0
        c = jobs_table.c
        ahead = or_(
            c.created_at < record.created_at,
            and_(c.created_at == record.created_at, c.id < record.id),
        )
        query = (
            select(func.count())
            .select_from(jobs_table)
            .where(c.tenant == record.tenant, c.state == "queued", ahead)
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one()) + 1

    def update_job(self, job_id: str, **values: Any) -> None:
        if "metrics" in values:
            values["metrics"] = json.dumps(values["metrics"])
        with self.engine.begin() as conn:
            conn.execute(jobs_table.update().where(jobs_table.c.id == job_id).values(**values))

    def finish_job(self, job_id: str, state: str, **values: Any) -> bool:
        """Moves an active job to a final state once; False if it had already ended."""
        if "metrics" in values:
            values["metrics"] = json.dumps(values["metrics"])
        query = (
            jobs_table.update()
            .where(jobs_table.c.id == job_id, jobs_table.c.state.in_(ACTIVE_STATES))
            .values(state=state, finished_at=time.time(), **values)
        )
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount == 1

    # Events
    def append_event(self, job_id: str, kind: str, payload: dict[str, Any]) -> int:
        """Next sequence number for the job; retried if another writer took it first."""
        for _ in range(20):
            with self.engine.begin() as conn:
                last = conn.execute(
                    select(func.max(events_table.c.sequence)).where(events_table.c.job_id == job_id)
                ).scalar_one()
                sequence = (last or 0) + 1
                try:
                    conn.execute(
                        events_table.insert().values(
                            job_id=job_id,
                            sequence=sequence,
                            time=time.time(),
                            kind=kind,
                            payload=json.dumps(payload),
                        )
                    )
                    return sequence
                except IntegrityError:
                    continue
        raise RuntimeError(f"could not append an event to {job_id}")

    def events_after(self, job_id: str, sequence: int, limit: int = 1000) -> list[EventRecord]:
        query = (
            select(events_table)
            .where(events_table.c.job_id == job_id, events_table.c.sequence > sequence)
            .order_by(events_table.c.sequence)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            EventRecord(r.job_id, r.sequence, r.time, r.kind, json.loads(r.payload)) for r in rows
        ]

    def _page(self, table: Table, tenant: str, after: tuple[float, str], limit: int) -> list[Any]:
        """Newest first after `after`, keyed on (created_at, id): stable under inserts."""
        created, last_id = after
        query = select(table).where(table.c.tenant == tenant)
        if created != math.inf:
            query = query.where(
                or_(
                    table.c.created_at < created,
                    and_(table.c.created_at == created, table.c.id < last_id),
                )
            )
        query = query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return conn.execute(query).all()
