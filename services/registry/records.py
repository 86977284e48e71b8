"""Plain records the registry core hands out; the gRPC edge converts them to protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum

from services.common.adapter_ref import AdapterName
from services.registry.peft_files import PeftInfo


class EventKind(IntEnum):
    VERSION_PUSHED = 1
    VERSION_DELETED = 2
    ALIAS_SET = 3
    ALIAS_DELETED = 4


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FileRecord:
    path: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class VersionRecord:
    name: AdapterName
    version: int
    digest: str
    size_bytes: int
    peft: PeftInfo
    lineage: dict[str, str]
    metrics: dict[str, float]
    description: str
    created_at: datetime
    files: tuple[FileRecord, ...]
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class AliasRecord:
    name: AdapterName
    alias: str
    version: int
    staged_version: int = 0
    effective_at: datetime | None = None


@dataclass(frozen=True)
class AdapterSummary:
    name: AdapterName
    latest: VersionRecord
    version_count: int
    aliases: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EventRecord:
    sequence: int
    kind: EventKind
    name: AdapterName
    version: int
    alias: str
    previous_version: int
    effective_at: datetime
    occurred_at: datetime
