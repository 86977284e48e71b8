"""Registry metadata: versions, files, aliases and the event log, one transaction per call.

Synchronous SQLAlchemy; the async core runs these calls in its executor. Every
query is scoped by tenant, so a name from another tenant simply finds nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from services.common.adapter_ref import AdapterName, AdapterRef
from services.common.errors import Aborted, FailedPrecondition, NotFound
from services.common.migrations import Schema, upgrade
from services.registry.models import AdapterRow, AliasRow, EventRow, FileRow, VersionRow
from services.registry.peft_files import PeftInfo
from services.registry.records import (
    AdapterSummary,
    AliasRecord,
    EventKind,
    EventRecord,
    FileRecord,
    VersionRecord,
    now,
    utc,
)

#: Alembic revisions of the registry tables (services/registry/migrations).
SCHEMA = Schema("registry", Path(__file__).with_name("migrations"), marker_table="adapters")


def manifest_digest(files: Sequence[FileRecord]) -> str:
    lines = "".join(f"{f.path}\0{f.sha256}\0{f.size_bytes}\n" for f in sorted(files, key=_path))
    return hashlib.sha256(lines.encode()).hexdigest()


def _path(record: FileRecord) -> str:
    return record.path


def _effective(alias: AliasRow, moment: datetime) -> int:
    if alias.staged_version and alias.effective_at and utc(alias.effective_at) <= moment:
        return alias.staged_version
    return alias.version


class AdapterStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        upgrade(engine, SCHEMA)

    # -- writes ---------------------------------------------------------------------------

    def create_version(
        self,
        name: AdapterName,
        files: Sequence[FileRecord],
        peft: PeftInfo,
        lineage: dict[str, str],
        metrics: dict[str, float],
        description: str,
        aliases: Sequence[str] = (),
    ) -> VersionRecord:
        for _attempt in range(5):
            try:
                return self._create_version(
                    name, files, peft, lineage, metrics, description, aliases
                )
            except IntegrityError:
                continue  # a concurrent push took the same version number: take the next
        raise Aborted("too many concurrent pushes to this adapter; try again")

    def _create_version(self, name, files, peft, lineage, metrics, description, aliases):
        moment = now()
        with Session(self.engine) as session, session.begin():
            adapter = self._adapter(session, name)
            if adapter is None:
                adapter = AdapterRow(tenant=name.tenant, name=name.name, created_at=moment)
                session.add(adapter)
                session.flush()
            latest = session.scalar(
                select(func.max(VersionRow.version)).where(VersionRow.adapter_id == adapter.id)
            )
            row = VersionRow(
                adapter_id=adapter.id,
                version=(latest or 0) + 1,
                digest=manifest_digest(files),
                size_bytes=sum(f.size_bytes for f in files),
                peft_type=peft.peft_type,
                base_model=peft.base_model,
                peft_config=peft.raw,
                lineage=dict(lineage),
                metrics=dict(metrics),
                description=description,
                created_at=moment,
                files=[
                    FileRow(path=f.path, size_bytes=f.size_bytes, sha256=f.sha256) for f in files
                ],
            )
            session.add(row)
            session.flush()
            self._event(session, name, EventKind.VERSION_PUSHED, row.version, moment=moment)
            for alias in aliases:
                self._move_alias(session, adapter, name, alias, row.version, moment, moment)
            session.flush()
            session.refresh(adapter)
            return self._record(row, adapter, moment)

    def set_alias(
        self, name: AdapterName, alias: str, version: int, stage_seconds: int = 0
    ) -> AliasRecord:
        moment = now()
        effective_at = moment + timedelta(seconds=stage_seconds)
        with Session(self.engine) as session, session.begin():
            adapter = self._require_adapter(session, name)
            if self._version(session, adapter, version) is None:
                raise NotFound(f"version {version} of {name} not found")
            row = self._move_alias(session, adapter, name, alias, version, moment, effective_at)
            return self._alias_record(name, row)

    def _move_alias(
        self,
        session: Session,
        adapter: AdapterRow,
        name: AdapterName,
        alias: str,
        version: int,
        moment: datetime,
        effective_at: datetime,
    ) -> AliasRow:
        row = next((a for a in adapter.aliases if a.alias == alias), None)
        previous = _effective(row, moment) if row else 0
        staged = effective_at > moment
        if row is None:
            row = AliasRow(adapter=adapter, alias=alias, version=0 if staged else version)
            session.add(row)
        else:
            row.version = previous
        row.staged_version = version if staged else 0
        row.effective_at = effective_at if staged else None
        if not staged:
            row.version = version
        self._event(
            session, name, EventKind.ALIAS_SET, version, alias, previous, effective_at, moment
        )
        return row

    def delete_alias(self, name: AdapterName, alias: str) -> None:
        moment = now()
        with Session(self.engine) as session, session.begin():
            adapter = self._require_adapter(session, name)
            row = next((a for a in adapter.aliases if a.alias == alias), None)
            if row is None:
                raise NotFound(f"alias {alias!r} of {name} not found")
            previous = _effective(row, moment)
            session.delete(row)
            self._event(session, name, EventKind.ALIAS_DELETED, 0, alias, previous, moment=moment)

    def delete(self, name: AdapterName, version: int, force: bool) -> tuple[list[int], set[str]]:
        """Deletes versions; returns their numbers and the blob digests no longer referenced."""
        moment = now()
        with Session(self.engine) as session, session.begin():
            adapter = self._require_adapter(session, name, with_versions=True)
            doomed = [v for v in adapter.versions if version in (0, v.version)]
            if not doomed:
                raise NotFound(f"version {version} of {name} not found")
            numbers = {v.version for v in doomed}
            pinned = [a for a in adapter.aliases if {a.version, a.staged_version} & numbers]
            if pinned and not force:
                labels = ", ".join(f"{a.alias}→{_effective(a, moment)}" for a in pinned)
                raise FailedPrecondition(
                    f"aliases point at the versions to delete ({labels}): move them first,"
                    " or delete with force"
                )
            for alias in pinned:
                self._event(
                    session, name, EventKind.ALIAS_DELETED, 0, alias.alias,
                    _effective(alias, moment), moment=moment,
                )  # fmt: skip
                session.delete(alias)
            digests = {f.sha256 for v in doomed for f in v.files}
            for row in doomed:
                self._event(session, name, EventKind.VERSION_DELETED, row.version, moment=moment)
                session.delete(row)
            if version == 0:
                session.delete(adapter)
            session.flush()
            return sorted(numbers), digests - self._referenced(session, digests)

    # -- reads ----------------------------------------------------------------------------

    def resolve(self, ref: AdapterRef) -> VersionRecord:
        """Reads the adapter row, its aliases and the one version `ref` names (with its
        files): a constant number of indexed queries however many versions there are."""
        moment = now()
        with Session(self.engine) as session:
            adapter = self._require_adapter(session, ref.adapter)
            number = ref.version
            if ref.alias:
                alias = next((a for a in adapter.aliases if a.alias == ref.alias), None)
                number = _effective(alias, moment) if alias else 0
                if not number:
                    raise NotFound(f"alias {ref.alias!r} of {ref.adapter} not found")
            row = self._version(session, adapter, number) if number != 0 else None
            if row is None:
                raise NotFound(f"{ref} not found")
            return self._record(row, adapter, moment)

    def list_adapters(
        self, tenant: str, after: str, limit: int, base_model: str = ""
    ) -> list[AdapterSummary]:
        moment = now()
        with Session(self.engine) as session:
            latest = (
                select(VersionRow.adapter_id, func.max(VersionRow.version).label("version"))
                .group_by(VersionRow.adapter_id)
                .subquery()
            )
            query = (
                select(AdapterRow, VersionRow)
                .join(latest, latest.c.adapter_id == AdapterRow.id)
                .join(
                    VersionRow,
                    (VersionRow.adapter_id == AdapterRow.id)
                    & (VersionRow.version == latest.c.version),
                )
                .where(AdapterRow.tenant == tenant, AdapterRow.name > after)
                .order_by(AdapterRow.name)
                .limit(limit)
                .options(selectinload(AdapterRow.aliases), selectinload(VersionRow.files))
            )
            if base_model:
                query = query.where(VersionRow.base_model == base_model)
            summaries = []
            for adapter, row in session.execute(query):
                count = session.scalar(
                    select(func.count()).where(VersionRow.adapter_id == adapter.id)
                )
                summaries.append(
                    AdapterSummary(
                        name=AdapterName(adapter.tenant, adapter.name),
                        latest=self._record(row, adapter, moment),
                        version_count=count or 0,
                        aliases={a.alias: _effective(a, moment) for a in adapter.aliases},
                    )
                )
            return summaries

    def list_versions(self, name: AdapterName, before: int, limit: int) -> list[VersionRecord]:
        moment = now()
        with Session(self.engine) as session:
            adapter = self._require_adapter(session, name)
            query = select(VersionRow).where(VersionRow.adapter_id == adapter.id)
            if before:
                query = query.where(VersionRow.version < before)
            rows = session.scalars(
                query.order_by(VersionRow.version.desc())
                .limit(limit)
                .options(selectinload(VersionRow.files))
            )
            return [self._record(v, adapter, moment) for v in rows]

    def aliases(self, tenants: Sequence[str], name: str = "") -> list[AliasRecord]:
        """Current aliases of the given tenants (of one adapter when `name` is given)."""
        records: list[AliasRecord] = []
        with Session(self.engine) as session:
            for start in range(0, len(tenants), 500):  # stay under bound-parameter limits
                query = select(AdapterRow).where(
                    AdapterRow.tenant.in_(tenants[start : start + 500])
                )
                if name:
                    query = query.where(AdapterRow.name == name)
                records += [
                    self._alias_record(AdapterName(a.tenant, a.name), alias)
                    for a in session.scalars(query.options(selectinload(AdapterRow.aliases)))
                    for alias in a.aliases
                ]
        return records

    def events_after(self, after: int, tenant: str = "", limit: int = 500) -> list[EventRecord]:
        """Events past the global position `after`: one tenant's, or every tenant's."""
        with Session(self.engine) as session:
            query = select(EventRow).where(EventRow.sequence > after)
            if tenant:
                query = query.where(EventRow.tenant == tenant)
            rows = session.scalars(query.order_by(EventRow.sequence).limit(limit))
            return [
                EventRecord(
                    sequence=r.sequence,
                    kind=EventKind(r.kind),
                    name=AdapterName(r.tenant, r.name),
                    version=r.version,
                    alias=r.alias,
                    previous_version=r.previous_version,
                    effective_at=utc(r.effective_at),
                    occurred_at=utc(r.occurred_at),
                )
                for r in rows
            ]

    def tenant_position(self, tenant: str, after: int) -> tuple[int, int]:
        """(global position, tenant sequence) of the tenant's `after`-th event, or of its last
        when `after` is 0 or past the end. A tenant numbers only its own events, 1, 2, 3...:
        the log is append-only, so that numbering never changes."""
        with Session(self.engine) as session:
            mine = select(EventRow.sequence).where(EventRow.tenant == tenant)
            count = session.scalar(select(func.count()).select_from(mine.subquery())) or 0
            if not after or after >= count:
                last = session.scalar(
                    select(func.max(EventRow.sequence)).where(EventRow.tenant == tenant)
                )
                return last or 0, count
            position = session.scalar(mine.order_by(EventRow.sequence).offset(after - 1).limit(1))
            return position or 0, after

    def last_sequence(self) -> int:
        with Session(self.engine) as session:
            return session.scalar(select(func.max(EventRow.sequence))) or 0

    def referenced_digests(self) -> set[str]:
        with Session(self.engine) as session:
            return set(session.scalars(select(FileRow.sha256).distinct()))

    def referenced(self, digests: set[str]) -> set[str]:
        """Which of `digests` some stored version still uses."""
        with Session(self.engine) as session:
            return self._referenced(session, digests)

    @staticmethod
    def _referenced(session: Session, digests: set[str]) -> set[str]:
        query = select(FileRow.sha256).where(FileRow.sha256.in_(digests)).distinct()
        return set(session.scalars(query))

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _adapter(
        session: Session, name: AdapterName, with_versions: bool = False
    ) -> AdapterRow | None:
        """The adapter row with its aliases; with every version and file only when asked
        (a delete needs them; reads fetch the one version they name)."""
        options = [selectinload(AdapterRow.aliases)]
        if with_versions:
            options.append(selectinload(AdapterRow.versions).selectinload(VersionRow.files))
        return session.scalar(
            select(AdapterRow)
            .where(AdapterRow.tenant == name.tenant, AdapterRow.name == name.name)
            .options(*options)
        )

    def _require_adapter(
        self, session: Session, name: AdapterName, with_versions: bool = False
    ) -> AdapterRow:
        adapter = self._adapter(session, name, with_versions)
        if adapter is None:
            raise NotFound(f"adapter {name} not found")
        return adapter

    @staticmethod
    def _version(session: Session, adapter: AdapterRow, number: int | None) -> VersionRow | None:
        """One version row with its files; `None` asks for the newest."""
        query = select(VersionRow).where(VersionRow.adapter_id == adapter.id)
        if number is None:
            query = query.order_by(VersionRow.version.desc()).limit(1)
        else:
            query = query.where(VersionRow.version == number)
        return session.scalar(query.options(selectinload(VersionRow.files)))

    @staticmethod
    def _event(
        session: Session,
        name: AdapterName,
        kind: EventKind,
        version: int,
        alias: str = "",
        previous: int = 0,
        effective_at: datetime | None = None,
        moment: datetime | None = None,
    ) -> None:
        moment = moment or now()
        session.add(
            EventRow(
                tenant=name.tenant,
                name=name.name,
                kind=int(kind),
                version=version,
                alias=alias,
                previous_version=previous,
                effective_at=effective_at or moment,
                occurred_at=moment,
            )
        )

    @staticmethod
    def _alias_record(name: AdapterName, row: AliasRow) -> AliasRecord:
        return AliasRecord(
            name=name,
            alias=row.alias,
            version=_effective(row, now()),
            staged_version=row.staged_version if row.staged_version else 0,
            effective_at=utc(row.effective_at) if row.effective_at else None,
        )

    @staticmethod
    def _record(row: VersionRow, adapter: AdapterRow, moment: datetime) -> VersionRecord:
        return VersionRecord(
            name=AdapterName(adapter.tenant, adapter.name),
            version=row.version,
            digest=row.digest,
            size_bytes=row.size_bytes,
            peft=PeftInfo.from_config(row.peft_config or {}),
            lineage=dict(row.lineage or {}),
            metrics=dict(row.metrics or {}),
            description=row.description,
            created_at=utc(row.created_at),
            files=tuple(FileRecord(f.path, f.size_bytes, f.sha256) for f in row.files),
            aliases=tuple(
                sorted(a.alias for a in adapter.aliases if _effective(a, moment) == row.version)
            ),
        )
