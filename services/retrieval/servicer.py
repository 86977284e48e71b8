"""The gRPC edge of retrieval: protobuf in, core call with the caller's tenant, protobuf out.

With replicas, a call whose tenant another replica serves is relayed there first
(`forwarding.Forwarder`); the method body runs only where the tenant is served.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from services.common.context import current_tenant
from services.common.errors import InvalidArgument
from services.common.kit import Servicer
from services.retrieval import convert
from services.retrieval.forwarding import Forwarder
from services.retrieval.manager import CollectionManager
from services.retrieval.records import DocumentInput

R = TypeVar("R")
Method = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]


def routed(response: type[Any]) -> Callable[[Method[R]], Method[R]]:
    """A unary RPC served by its tenant's replica: relayed there unless that is this one."""

    def wrap(method: Method[R]) -> Method[R]:
        @functools.wraps(method)
        async def serve(self: RetrievalServicer, request: Any, context: Any) -> R:
            reply = await self.forwarder.unary(method.__name__, request, response, context)
            return reply if reply is not None else await method(self, request, context)

        return serve

    return wrap


class RetrievalServicer(pb_grpc.RetrievalServiceServicer, Servicer[CollectionManager]):
    """Attached to the manager at once; the readiness gate holds calls until it is open."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    @routed(pb.CreateCollectionResponse)
    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateCollectionResponse:
        record = await self.core.create_collection(
            current_tenant(),
            request.name,
            request.embedding_model,
            convert.index_kind(request.index_kind),
            request.chunk_size_tokens,
            request.chunk_overlap_tokens,
        )
        return pb.CreateCollectionResponse(collection=convert.collection(record))

    @routed(pb.GetCollectionResponse)
    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCollectionResponse:
        record = await self.core.get_collection(current_tenant(), request.name)
        return pb.GetCollectionResponse(collection=convert.collection(record))

    @routed(pb.ListCollectionsResponse)
    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        records, token = await self.core.list_collections(
            current_tenant(), request.page_size, request.page_token
        )
        return pb.ListCollectionsResponse(
            collections=[convert.collection(r) for r in records], next_page_token=token
        )

    @routed(pb.DeleteCollectionResponse)
    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCollectionResponse:
        await self.core.delete_collection(current_tenant(), request.name)
        return pb.DeleteCollectionResponse()

    async def UpsertDocuments(
        self,
        request_iterator: AsyncIterator[pb.UpsertDocumentsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.UpsertDocumentsResponse]:
        relayed = await self.forwarder.stream(
            "UpsertDocuments", request_iterator, pb.UpsertDocumentsResponse, context
        )
        if relayed is not None:
            async for reply in relayed:
                yield reply
            return
        tenant = current_tenant()
        first = await anext(aiter(request_iterator), None)
        if first is None:
            raise InvalidArgument("upsert stream carried no message")
        if not first.collection:
            raise InvalidArgument("the first upsert message must name the collection")

        async def batches() -> AsyncIterator[list[DocumentInput]]:
            yield convert.documents(first.documents)
            async for request in request_iterator:
                yield convert.documents(request.documents)

        async for item in self.core.upsert(tenant, first.collection, batches()):
            yield convert.progress(item)

    @routed(pb.DeleteDocumentsResponse)
    async def DeleteDocuments(
        self, request: pb.DeleteDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentsResponse:
        deleted, revision = await self.core.delete_documents(
            current_tenant(),
            request.collection,
            list(request.document_ids),
            convert.conditions(request.filter),
        )
        return pb.DeleteDocumentsResponse(documents_deleted=deleted, revision=revision)

    @routed(pb.SearchChunksResponse)
    async def SearchChunks(
        self, request: pb.SearchChunksRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchChunksResponse:
        hits, revision = await self.core.search(
            current_tenant(),
            request.collection,
            request.query,
            request.top_k,
            convert.conditions(request.filter),
            request.min_score if request.HasField("min_score") else None,
            convert.search_mode(request.mode),
        )
        return pb.SearchChunksResponse(
            chunks=[convert.scored_chunk(h) for h in hits], revision=revision
        )

    @routed(pb.GetCollectionStatsResponse)
    async def GetCollectionStats(
        self, request: pb.GetCollectionStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCollectionStatsResponse:
        return convert.stats(await self.core.stats(current_tenant(), request.name))

    async def EmbedTexts(
        self, request: pb.EmbedTextsRequest, context: grpc.aio.ServicerContext
    ) -> pb.EmbedTextsResponse:
        current_tenant()  # a tenant's call, or a service's acting for one
        result = await self.core.embed(list(request.texts), request.embedding_model)
        return pb.EmbedTextsResponse(
            embedding_model=result.model,
            embeddings=[pb.Embedding(values=v.tolist()) for v in result.vectors],
            tokens=result.tokens,
        )
