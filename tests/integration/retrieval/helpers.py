"""Small builders for retrieval requests, shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterable

from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from services.common.testing import tenant_metadata

ACME = tenant_metadata("acme")
GLOBEX = tenant_metadata("globex")


def doc(doc_id: str, text: str, uri: str = "", title: str = "", **metadata: str) -> pb.Document:
    return pb.Document(
        id=doc_id, text=text, metadata=metadata, source=pb.Source(uri=uri, title=title)
    )


def equals(key: str, value: str) -> pb.MetadataCondition:
    return pb.MetadataCondition(key=key, equals=value)


def one_of(key: str, *values: str) -> pb.MetadataCondition:
    return pb.MetadataCondition(key=key, **{"in": pb.StringList(values=list(values))})


async def create(
    stub: pb_grpc.RetrievalServiceStub, name: str, metadata=ACME, **fields: object
) -> pb.Collection:
    response = await stub.CreateCollection(
        pb.CreateCollectionRequest(name=name, **fields), metadata=metadata, timeout=30
    )
    return response.collection


async def upsert(
    stub: pb_grpc.RetrievalServiceStub,
    collection: str,
    batches: Iterable[list[pb.Document]],
    metadata=ACME,
) -> list[pb.UpsertDocumentsResponse]:
    """Sends the batches on one stream; returns every progress message."""
    requests = [
        pb.UpsertDocumentsRequest(collection=collection if i == 0 else "", documents=batch)
        for i, batch in enumerate(batches)
    ]
    call = stub.UpsertDocuments(iter(requests), metadata=metadata, timeout=120)
    return [item async for item in call]


async def search(
    stub: pb_grpc.RetrievalServiceStub, collection: str, query: str, metadata=ACME, **fields
) -> pb.SearchChunksResponse:
    return await stub.SearchChunks(
        pb.SearchChunksRequest(collection=collection, query=query, **fields),
        metadata=metadata,
        timeout=30,
    )


async def stats(
    stub: pb_grpc.RetrievalServiceStub, name: str, metadata=ACME
) -> pb.GetCollectionStatsResponse:
    return await stub.GetCollectionStats(
        pb.GetCollectionStatsRequest(name=name), metadata=metadata, timeout=30
    )
