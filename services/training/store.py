"""Durable state: datasets, jobs and each job's numbered event log (SQLite or PostgreSQL).

Every read takes the caller's tenant and answers NOT_FOUND for anything the tenant
does not own, so a check cannot be forgotten at the edge. Replicas share it: a job is
run by the replica holding its lease (services.common.leases), and every write about a
running job can be fenced with that lease, so a replica that lost it writes nothing.
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

from services.common.db import write_transaction
from services.common.errors import AlreadyExists, NotFound
from services.common.leases import Lease, LeaseLost, LeaseTable
from services.common.leases import now as lease_now
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
    # The lease (services.common.leases): which replica runs the job, until when, and
    # the fencing epoch that grows with every claim.
    Column("owner", String(128), nullable=False, default="", server_default=""),
    Column("lease_epoch", Integer, nullable=False, default=0, server_default="0"),
    Column("lease_expires_at", Float, nullable=True),
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
leases = LeaseTable(jobs_table)
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
    owner: str = ""
    lease_epoch: int = 0
    lease_expires_at: float | None = None
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

    # Leases: which replica runs which job
    def claim_jobs(self, owner: str, seconds: float, limit: int) -> list[tuple[JobRecord, Lease]]:
        """Up to `limit` jobs for `owner`, oldest first: queued ones, and running ones whose
        lease lapsed (their replica died); each is `running` under a new epoch."""
        active = jobs_table.c.state.in_(ACTIVE_STATES)
        order = (jobs_table.c.created_at, jobs_table.c.id)
        with self.engine.connect() as conn:  # a read first: most polls find nothing to claim
            free = leases.free(lease_now(conn))
            if conn.execute(select(jobs_table.c.id).where(active, free).limit(1)).first() is None:
                return []
        with write_transaction(self.engine) as conn:
            won = leases.claim(conn, owner, seconds, active, order, limit, state="running")
        return [(self._claimed(lease), lease) for lease in won]

    def claim_own(self, owner: str, seconds: float) -> list[tuple[JobRecord, Lease]]:
        """The running jobs `owner` held before it restarted, under new epochs."""
        c = jobs_table.c
        query = select(c.id).where(c.state == "running", c.owner == owner)
        out = []
        with write_transaction(self.engine) as conn:
            for (job_id,) in conn.execute(query).all():
                lease = leases.claim_key(conn, job_id, owner, seconds, own=True)
                if lease is not None:
                    out.append(lease)
        return [(self._claimed(lease), lease) for lease in out]

    def _claimed(self, lease: Lease) -> JobRecord:
        record = self.find_job(lease.key)
        assert record is not None
        return record

    def renew(self, lease: Lease, seconds: float) -> Lease | None:
        """The heartbeat; None once another replica holds the job."""
        with write_transaction(self.engine) as conn:
            return leases.renew(conn, lease, seconds)

    def release(self, lease: Lease, **values: Any) -> bool:
        """Hands the job back (with `values`, e.g. state=queued) for any replica to claim."""
        with write_transaction(self.engine) as conn:
            return leases.release(conn, lease, **values)

    # Writes about a job: fenced by the lease when one is given
    def update_job(self, job_id: str, lease: Lease | None = None, **values: Any) -> None:
        """Raises LeaseLost, writing nothing, when `lease` is no longer the job's."""
        if "metrics" in values:
            values["metrics"] = json.dumps(values["metrics"])
        with write_transaction(self.engine) as conn:
            self._update(conn, job_id, lease, values)

    def _update(self, conn: Any, job_id: str, lease: Lease | None, values: dict) -> None:
        where = jobs_table.c.id == job_id if lease is None else leases.held(lease)
        result = conn.execute(jobs_table.update().where(where).values(**values))
        if lease is not None and result.rowcount != 1:
            raise LeaseLost(f"job {job_id}: lease {lease.epoch} was taken over")

    def finish_job(
        self, job_id: str, state: str, lease: Lease | None = None, **values: Any
    ) -> bool:
        """Moves an active job to a final state once; False if it had already ended.

        Without a lease only a queued job can end (a cancel before any replica took
        it); a running job ends by its lease holder, and the lease is released with it.
        """
        if "metrics" in values:
            values["metrics"] = json.dumps(values["metrics"])
        c = jobs_table.c
        if lease is None:
            where = and_(c.id == job_id, c.state == "queued")
        else:
            where = and_(leases.held(lease), c.state.in_(ACTIVE_STATES))
        query = (
            jobs_table.update()
            .where(where)
            .values(state=state, finished_at=time.time(), lease_expires_at=None, **values)
        )
        with write_transaction(self.engine) as conn:
            return conn.execute(query).rowcount == 1

    def append_event(
        self, job_id: str, kind: str, payload: dict[str, Any], lease: Lease | None = None
    ) -> int:
        """Next sequence number for the job; retried if another writer took it first.

        Raises LeaseLost, writing nothing, when `lease` is no longer the job's.
        """
        return self.record(job_id, lease, [(kind, payload)])

    def record(
        self,
        job_id: str,
        lease: Lease | None,
        events: list[tuple[str, dict[str, Any]]],
        **values: Any,
    ) -> int:
        """Appends `events` and sets `values` on the job in one transaction: a crash keeps
        both or neither, so events copied from a worker's file are never logged twice.
        Returns the last sequence number written (0 for no events)."""
        if "metrics" in values:
            values["metrics"] = json.dumps(values["metrics"])
        for _ in range(20):
            try:
                with write_transaction(self.engine) as conn:
                    if lease is not None:
                        # Locks the job row: a claimer waits for this write, never splits it.
                        held = select(jobs_table.c.id).where(leases.held(lease)).with_for_update()
                        if conn.execute(held).first() is None:
                            raise LeaseLost(f"job {job_id}: lease {lease.epoch} was taken over")
                    sequence = self._append(conn, job_id, events)
                    if values:
                        self._update(conn, job_id, lease, values)
                    return sequence
            except IntegrityError:
                continue  # another writer took the sequence number: read it again
        raise RuntimeError(f"could not append an event to {job_id}")

    def _append(self, conn: Any, job_id: str, events: list[tuple[str, dict[str, Any]]]) -> int:
        last = conn.execute(
            select(func.max(events_table.c.sequence)).where(events_table.c.job_id == job_id)
        ).scalar_one()
        sequence = last or 0
        for kind, payload in events:
            sequence += 1
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
