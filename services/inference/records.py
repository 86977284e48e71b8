"""Plain records the gateways hand the inference core: no other service's protobuf.

The gateways are the only place that reads registry or retrieval messages; the
core, its tests and its fakes speak these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from services.common.adapter_ref import AdapterName, AdapterRef


@dataclass(frozen=True)
class AdapterVersionInfo:
    """One resolved, immutable adapter version: what a download must deliver exactly."""

    name: AdapterName
    version: int
    digest: str
    size_bytes: int = 0

    @property
    def ref(self) -> AdapterRef:
        return AdapterRef(self.name, version=self.version)

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class EngineRequirements:
    """What the serving engine can take; the registry refuses a version that does not fit."""

    base_model: str
    max_rank: int
    modules: tuple[str, ...]
    peft_types: tuple[str, ...] = ("LORA",)


class AdapterEventKind(Enum):
    VERSION_PUSHED = "version_pushed"
    VERSION_DELETED = "version_deleted"
    ALIAS_SET = "alias_set"
    ALIAS_DELETED = "alias_deleted"


@dataclass(frozen=True)
class AdapterEvent:
    """A registry change for one adapter; `effective_at` is seconds since the epoch."""

    kind: AdapterEventKind
    name: AdapterName
    version: int = 0
    alias: str = ""
    previous_version: int = 0
    effective_at: float = 0.0


@dataclass(frozen=True)
class MetadataCondition:
    """A document's metadata `key` must equal one of `values` (one value: equality)."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class MetadataFilter:
    """All conditions must hold; retrieval checks keys and values, the core passes it on."""

    conditions: tuple[MetadataCondition, ...] = ()


@dataclass(frozen=True)
class ChunkSearch:
    """A search of one collection; `min_score` None keeps every hit."""

    collection: str
    query: str
    top_k: int
    min_score: float | None = None
    hybrid: bool = False
    filter: MetadataFilter | None = None


@dataclass(frozen=True)
class RetrievedChunk:
    """One search hit, with where it sits in its document."""

    document_id: str
    text: str
    chunk_index: int = 0
    start_char: int = 0
    end_char: int = 0
    score: float = 0.0
    source_uri: str = ""
    source_title: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchResult:
    chunks: tuple[RetrievedChunk, ...]
    revision: int = 0
