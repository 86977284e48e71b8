"""Retrieval client: collections, streamed upserts with progress, deletes, search, stats."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc

from loraplex.client.base import BaseClient, LoraplexClientError
from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc

#: Called with (chunks embedded, chunks known so far, documents written) as an upsert runs.
UpsertProgress = Callable[[int, int, int], None]
#: A document as a protobuf or a mapping: id, text, metadata, uri, title.
DocumentLike = pb.Document | Mapping[str, Any]
#: Metadata filter: key -> value (equality) or key -> list of values ("in").
Where = Mapping[str, str | Sequence[str]]
DEFAULT_UPSERT_TIMEOUT = 3600.0
INDEX_KINDS = {"exact": pb.INDEX_KIND_EXACT, "hnsw": pb.INDEX_KIND_HNSW}


def to_document(item: DocumentLike) -> pb.Document:
    if isinstance(item, pb.Document):
        return item
    return pb.Document(
        id=str(item["id"]),
        text=str(item["text"]),
        metadata={str(k): str(v) for k, v in (item.get("metadata") or {}).items()},
        source=pb.Source(uri=str(item.get("uri", "")), title=str(item.get("title", ""))),
    )


def metadata_filter(where: Where | None) -> pb.MetadataFilter | None:
    """{"lang": "en", "team": ["a", "b"]} -> lang equals en AND team in (a, b)."""
    if not where:
        return None
    conditions = []
    for key, value in where.items():
        if isinstance(value, str):
            conditions.append(pb.MetadataCondition(key=key, equals=value))
        else:
            values = pb.StringList(values=[str(v) for v in value])
            conditions.append(pb.MetadataCondition(key=key, **{"in": values}))
    return pb.MetadataFilter(conditions=conditions)


class RetrievalClient(BaseClient):
    service = "retrieval"

    @property
    def stub(self) -> pb_grpc.RetrievalServiceStub:
        return pb_grpc.RetrievalServiceStub(self.channel)

    def create_collection(
        self,
        name: str,
        *,
        index_kind: str = "exact",
        embedding_model: str = "",
        chunk_size_tokens: int = 0,
        chunk_overlap_tokens: int = 0,
    ) -> pb.Collection:
        if index_kind not in INDEX_KINDS:
            raise ValueError(f"index_kind must be one of {sorted(INDEX_KINDS)}")
        request = pb.CreateCollectionRequest(
            name=name,
            embedding_model=embedding_model,
            index_kind=INDEX_KINDS[index_kind],
            chunk_size_tokens=chunk_size_tokens,
            chunk_overlap_tokens=chunk_overlap_tokens,
        )
        return self._call(self.stub.CreateCollection, request).collection

    def get_collection(self, name: str) -> pb.Collection:
        return self._call(self.stub.GetCollection, pb.GetCollectionRequest(name=name)).collection

    def list_collections(self, page_size: int = 100) -> Iterator[pb.Collection]:
        request = pb.ListCollectionsRequest(page_size=page_size)
        return self._paged(self.stub.ListCollections, request, "collections")

    def delete_collection(self, name: str) -> None:
        self._call(self.stub.DeleteCollection, pb.DeleteCollectionRequest(name=name))

    def upsert(
        self,
        collection: str,
        docs: Iterable[DocumentLike],
        batch_size: int = 64,
        progress_cb: UpsertProgress | None = None,
        timeout: float = DEFAULT_UPSERT_TIMEOUT,
    ) -> pb.UpsertDocumentsResponse:
        """Streams `docs` in batches (read lazily); returns the final, durable response.

        Each batch is written atomically; if the call fails, batches already reported
        in `documents_written` are durable and the rest are not.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")

        # gRPC reads requests on its own thread and only logs what the iterator raises:
        # a failing `docs` (a bad file, say) ends the stream after the batches already
        # sent, and its error is raised here once those are durable.
        failure: list[BaseException] = []

        def requests() -> Iterator[pb.UpsertDocumentsRequest]:
            try:
                items = iter(docs)
                first = True
                while batch := list(itertools.islice(items, batch_size)):
                    yield pb.UpsertDocumentsRequest(
                        collection=collection if first else "",
                        documents=[to_document(d) for d in batch],
                    )
                    first = False
                if first:
                    yield pb.UpsertDocumentsRequest(collection=collection)
            except Exception as exc:
                failure.append(exc)

        last = pb.UpsertDocumentsResponse()
        try:
            responses = self.stub.UpsertDocuments(
                requests(), timeout=timeout, metadata=self.config.metadata()
            )
            for last in responses:
                if progress_cb is not None:
                    progress_cb(last.chunks_embedded, last.chunks_total, last.documents_written)
        except grpc.RpcError as error:
            if failure:  # the stream ended early because of it, so it is the real cause
                raise failure[0] from None
            raise LoraplexClientError.from_rpc_error(error) from None
        if failure:
            raise failure[0]
        if not last.done:
            raise LoraplexClientError(grpc.StatusCode.INTERNAL, "upsert ended before completion")
        return last

    def delete_documents(
        self, collection: str, ids: Sequence[str] = (), where: Where | None = None
    ) -> pb.DeleteDocumentsResponse:
        """Deletes the given ids, or every document matching `where` (exactly one of them)."""
        request = pb.DeleteDocumentsRequest(
            collection=collection, document_ids=list(ids), filter=metadata_filter(where)
        )
        return self._call(self.stub.DeleteDocuments, request)

    def search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int = 0,
        where: Where | None = None,
        min_score: float | None = None,
        hybrid: bool = False,
    ) -> pb.SearchChunksResponse:
        request = pb.SearchChunksRequest(
            collection=collection,
            query=query,
            top_k=top_k,
            filter=metadata_filter(where),
            min_score=min_score,
            mode=pb.SEARCH_MODE_HYBRID if hybrid else pb.SEARCH_MODE_DENSE,
        )
        return self._call(self.stub.SearchChunks, request)

    def stats(self, collection: str) -> pb.GetCollectionStatsResponse:
        return self._call(
            self.stub.GetCollectionStats, pb.GetCollectionStatsRequest(name=collection)
        )
