"""Plain data passed between the retrieval core's parts (no gRPC, no SQL)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import numpy as np

from services.retrieval.chunking import Chunk


class IndexKind(StrEnum):
    EXACT = "exact"
    HNSW = "hnsw"


class SearchMode(StrEnum):
    DENSE = "dense"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class CollectionRecord:
    """A collection's settings as stored; `pk` is internal and never leaves the service."""

    pk: int
    tenant: str
    name: str
    embedding_model: str
    dimension: int
    index_kind: IndexKind
    chunk_size: int
    chunk_overlap: int
    created_at: datetime
    revision: int


@dataclass(frozen=True)
class Condition:
    """Metadata `key` must hold one of `values` (equality is a one-value list)."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class DocumentInput:
    doc_id: str
    text: str
    metadata: dict[str, str] = field(default_factory=dict)
    source_uri: str = ""
    source_title: str = ""


@dataclass
class PreparedDocument:
    """A document cut into chunks, with one unit vector per chunk."""

    doc: DocumentInput
    chunks: list[Chunk]
    vectors: np.ndarray


@dataclass(frozen=True)
class WriteResult:
    """What one committed write changed, for the index to mirror."""

    revision: int
    documents: int
    added_ids: np.ndarray
    added_vectors: np.ndarray
    removed_ids: np.ndarray


@dataclass(frozen=True)
class ChunkHit:
    """A retrieved chunk with its document's metadata and source."""

    chunk_id: int
    document_id: str
    chunk_index: int
    text: str
    start_char: int
    end_char: int
    metadata: dict[str, str]
    source_uri: str
    source_title: str
    score: float = 0.0


@dataclass(frozen=True)
class CollectionStats:
    documents: int
    chunks: int
    index_kind: IndexKind
    bytes_on_disk: int
    tombstones: int
    revision: int
