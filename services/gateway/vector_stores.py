"""`/v1/vector_stores` (+ files, search) on retrieval collections, and `/v1/embeddings`.

A vector store is a collection under the same name (its id), so a store made here is
the `collection` of chat's RAG extension and the `vector_store_ids` of `file_search`,
and a collection made over gRPC is a vector store here. A file added to a store is
one document whose id is the file id: search hits and citations name the file.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from loraplex.retrieval.v1 import retrieval_service_pb2 as ret_pb
from services.common.context import current_tenant
from services.common.errors import InvalidArgument, LoraplexError, NotFound
from services.common.kit import Blocking
from services.common.openai_json import OpenAIBody, parse_body, read_json
from services.gateway import convert
from services.gateway.files import deleted, file_text, list_args
from services.gateway.store import GatewayStore, VectorStoreFile
from services.gateway.upstream import RetrievalUpstream

#: Collections scanned for one list request.
MAX_SCAN = 2000


class CreateBody(OpenAIBody):
    name: str | None = Field(None, max_length=128)
    file_ids: list[str] = Field(default_factory=list, max_length=100)


class AddFileBody(OpenAIBody):
    file_id: str = Field(min_length=1)
    attributes: dict[str, str | int | float | bool] | None = None


class RankingOptions(BaseModel):
    score_threshold: float = Field(0.0, ge=0, le=1)
    ranker: str | None = None


class SearchBody(OpenAIBody):
    query: str | list[str]
    filters: dict[str, Any] | None = None
    max_num_results: int = Field(10, ge=1, le=50)
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False


class EmbeddingsBody(OpenAIBody):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


class VectorStoreRoutes:
    def __init__(
        self, store: GatewayStore, retrieval: RetrievalUpstream, blocking: Blocking
    ) -> None:
        self.store = store
        self.retrieval = retrieval
        self.blocking = blocking
        self.router = APIRouter(prefix="/v1")
        add = self.router.add_api_route
        add("/vector_stores", self.create, methods=["POST"])
        add("/vector_stores", self.list, methods=["GET"])
        add("/vector_stores/{store_id}", self.get, methods=["GET"])
        add("/vector_stores/{store_id}", self.delete, methods=["DELETE"])
        add("/vector_stores/{store_id}/files", self.add_file, methods=["POST"])
        add("/vector_stores/{store_id}/files", self.list_files, methods=["GET"])
        add("/vector_stores/{store_id}/files/{file_id}", self.get_file, methods=["GET"])
        add("/vector_stores/{store_id}/files/{file_id}", self.delete_file, methods=["DELETE"])
        add("/vector_stores/{store_id}/search", self.search, methods=["POST"])
        add("/embeddings", self.embeddings, methods=["POST"])

    async def create(self, request: Request) -> JSONResponse:
        tenant = current_tenant()
        body = parse_body(CreateBody, await read_json(request))
        name = body.name or f"vs_{uuid.uuid4().hex[:24]}"
        await self.retrieval.create(tenant, name)
        for file_id in body.file_ids:
            await self._add(tenant, name, file_id, {})
        return JSONResponse(await self._object(tenant, name))

    async def list(
        self, limit: int = 20, order: str = "desc", after: str = "", before: str = ""
    ) -> JSONResponse:
        list_args(limit, order)
        tenant = current_tenant()
        collections: list[ret_pb.Collection] = []
        token = ""
        while len(collections) < MAX_SCAN:
            reply = await self.retrieval.list(tenant, 500, token)
            collections += reply.collections
            token = reply.next_page_token
            if not token:
                break
        collections.sort(key=lambda c: (c.created_at.seconds, c.name), reverse=order == "desc")
        names = [c.name for c in collections]
        if after in names:
            collections = collections[names.index(after) + 1 :]
        elif before in names:
            collections = collections[: names.index(before)]
        data = [await self._object(tenant, c.name, c) for c in collections[:limit]]
        return JSONResponse(convert.page(data, len(collections) > limit))

    async def get(self, store_id: str) -> JSONResponse:
        return JSONResponse(await self._object(current_tenant(), store_id))

    async def delete(self, store_id: str) -> JSONResponse:
        tenant = current_tenant()
        await self.retrieval.delete(tenant, store_id)
        await self.blocking(self.store.drop_store_files, tenant, store_id)
        return JSONResponse(deleted("vector_store.deleted", store_id))

    async def add_file(self, store_id: str, request: Request) -> JSONResponse:
        tenant = current_tenant()
        body = parse_body(AddFileBody, await read_json(request))
        await self.retrieval.get(tenant, store_id)  # absent or another tenant's: 404
        item = await self._add(tenant, store_id, body.file_id, body.attributes or {})
        return JSONResponse(convert.vector_store_file_object(item))

    async def list_files(
        self, store_id: str, limit: int = 20, order: str = "desc", after: str = "", filter: str = ""
    ) -> JSONResponse:
        list_args(limit, order)
        tenant = current_tenant()
        await self.retrieval.get(tenant, store_id)
        items = await self.blocking(self.store.store_files, tenant, store_id)
        if filter:
            items = [i for i in items if i.status == filter]
        if order == "desc":
            items.reverse()
        ids = [i.file_id for i in items]
        if after in ids:
            items = items[ids.index(after) + 1 :]
        data = [convert.vector_store_file_object(i) for i in items[:limit]]
        return JSONResponse(convert.page(data, len(items) > limit))

    async def get_file(self, store_id: str, file_id: str) -> JSONResponse:
        tenant = current_tenant()
        items = await self.blocking(self.store.store_files, tenant, store_id, file_id)
        if not items:
            raise NotFound(f"no file {file_id[:64]!r} in vector store {store_id[:128]!r}")
        return JSONResponse(convert.vector_store_file_object(items[0]))

    async def delete_file(self, store_id: str, file_id: str) -> JSONResponse:
        tenant = current_tenant()
        items = await self.blocking(self.store.store_files, tenant, store_id, file_id)
        if not items:
            raise NotFound(f"no file {file_id[:64]!r} in vector store {store_id[:128]!r}")
        await self.retrieval.delete_documents(tenant, store_id, [file_id])
        await self.blocking(self.store.drop_store_files, tenant, store_id, file_id)
        return JSONResponse(deleted("vector_store.file.deleted", file_id))

    async def search(self, store_id: str, request: Request) -> JSONResponse:
        body = parse_body(SearchBody, await read_json(request))
        query = body.query if isinstance(body.query, str) else " ".join(body.query)
        ranking = body.ranking_options or RankingOptions()
        search = ret_pb.SearchChunksRequest(
            collection=store_id,
            query=query,
            top_k=body.max_num_results,
            filter=convert.metadata_filter(body.filters),
        )
        if ranking.score_threshold:
            search.min_score = ranking.score_threshold
        reply = await self.retrieval.search(current_tenant(), search)
        return JSONResponse(convert.search_page(query, reply))

    async def embeddings(self, request: Request) -> JSONResponse:
        body = parse_body(EmbeddingsBody, await read_json(request))
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or not all(isinstance(t, str) for t in texts):
            raise InvalidArgument("input: give a string or a list of strings (not token ids)")
        reply = await self.retrieval.embed(current_tenant(), list(texts), body.model)
        if body.dimensions is not None and body.dimensions != len(reply.embeddings[0].values):
            raise InvalidArgument(
                f"dimensions: {body.model} embeds in {len(reply.embeddings[0].values)}"
                " dimensions only"
            )
        return JSONResponse(convert.embeddings(reply, body.encoding_format))

    async def _add(
        self, tenant: str, store_id: str, file_id: str, attributes: dict[str, Any]
    ) -> VectorStoreFile:
        record, text = await self.blocking(file_text, self.store, tenant, file_id)
        item = VectorStoreFile(
            store_id, file_id, "in_progress", record.bytes, time.time(), dict(attributes)
        )
        await self.blocking(self.store.put_store_file, tenant, item)
        document = ret_pb.Document(
            id=file_id,
            text=text,
            metadata={k: convert_value(v) for k, v in attributes.items()},
            source=ret_pb.Source(uri=f"file:{file_id}", title=record.filename),
        )
        try:
            await self.retrieval.upsert(tenant, store_id, [document])
        except LoraplexError as exc:
            await self.blocking(
                self.store.set_store_file_status, tenant, store_id, file_id, "failed", exc.message
            )
            raise
        await self.blocking(
            self.store.set_store_file_status, tenant, store_id, file_id, "completed"
        )
        return VectorStoreFile(**{**item.__dict__, "status": "completed"})

    async def _object(
        self, tenant: str, name: str, collection: ret_pb.Collection | None = None
    ) -> dict[str, Any]:
        collection = collection or await self.retrieval.get(tenant, name)
        stats = await self.retrieval.stats(tenant, name)
        counts = await self.blocking(self.store.file_counts, tenant, name)
        return convert.vector_store_object(collection, stats.bytes_on_disk, counts)


def convert_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
