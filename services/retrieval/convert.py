"""Protobuf <-> core types, and nothing else."""

from __future__ import annotations

from collections.abc import Iterable

from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from services.common.errors import InvalidArgument
from services.common.timestamps import timestamp
from services.retrieval.manager import UpsertProgress
from services.retrieval.records import (
    ChunkHit,
    CollectionRecord,
    CollectionStats,
    Condition,
    DocumentInput,
    IndexKind,
    SearchMode,
)

_KIND_TO_PB = {IndexKind.EXACT: pb.INDEX_KIND_EXACT, IndexKind.HNSW: pb.INDEX_KIND_HNSW}
_KIND_FROM_PB = {
    pb.INDEX_KIND_UNSPECIFIED: IndexKind.EXACT,
    pb.INDEX_KIND_EXACT: IndexKind.EXACT,
    pb.INDEX_KIND_HNSW: IndexKind.HNSW,
}
_MODE_FROM_PB = {
    pb.SEARCH_MODE_UNSPECIFIED: SearchMode.DENSE,
    pb.SEARCH_MODE_DENSE: SearchMode.DENSE,
    pb.SEARCH_MODE_HYBRID: SearchMode.HYBRID,
}


def index_kind(value: int) -> IndexKind:
    try:
        return _KIND_FROM_PB[value]
    except KeyError:
        raise InvalidArgument(f"unknown index_kind {value}") from None


def search_mode(value: int) -> SearchMode:
    try:
        return _MODE_FROM_PB[value]
    except KeyError:
        raise InvalidArgument(f"unknown search mode {value}") from None


def collection(record: CollectionRecord) -> pb.Collection:
    return pb.Collection(
        name=record.name,
        embedding_model=record.embedding_model,
        dimension=record.dimension,
        index_kind=_KIND_TO_PB[record.index_kind],
        chunk_size_tokens=record.chunk_size,
        chunk_overlap_tokens=record.chunk_overlap,
        created_at=timestamp(record.created_at),
        revision=record.revision,
    )


def documents(messages: Iterable[pb.Document]) -> list[DocumentInput]:
    return [
        DocumentInput(
            doc_id=m.id,
            text=m.text,
            metadata=dict(m.metadata),
            source_uri=m.source.uri,
            source_title=m.source.title,
        )
        for m in messages
    ]


def conditions(message: pb.MetadataFilter) -> list[Condition]:
    out = []
    for cond in message.conditions:
        which = cond.WhichOneof("match")
        if which == "equals":
            values: tuple[str, ...] = (cond.equals,)
        elif which == "in":
            values = tuple(getattr(cond, "in").values)
        else:
            values = ()
        out.append(Condition(cond.key, values))
    return out


def progress(item: UpsertProgress) -> pb.UpsertDocumentsResponse:
    return pb.UpsertDocumentsResponse(
        chunks_embedded=item.chunks_embedded,
        chunks_total=item.chunks_total,
        documents_written=item.documents_written,
        done=item.done,
        revision=item.revision,
    )


def scored_chunk(hit: ChunkHit) -> pb.ScoredChunk:
    return pb.ScoredChunk(
        document_id=hit.document_id,
        chunk_index=hit.chunk_index,
        text=hit.text,
        start_char=hit.start_char,
        end_char=hit.end_char,
        score=hit.score,
        metadata=hit.metadata,
        source=pb.Source(uri=hit.source_uri, title=hit.source_title),
    )


def stats(item: CollectionStats) -> pb.GetCollectionStatsResponse:
    return pb.GetCollectionStatsResponse(
        documents=item.documents,
        chunks=item.chunks,
        index_kind=_KIND_TO_PB[item.index_kind],
        bytes_on_disk=item.bytes_on_disk,
        tombstones=item.tombstones,
        revision=item.revision,
    )
