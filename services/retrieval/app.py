"""The retrieval service on the kit: settings, the `CollectionManager` core and its servicer."""

from __future__ import annotations

import logging

import grpc

from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from services.common.auth import ServiceScopes
from services.common.kit import Kit, Service
from services.retrieval.embedder import Embedder, EmbedderPool, packaged_model_dir
from services.retrieval.manager import CollectionManager
from services.retrieval.servicer import RetrievalServicer
from services.retrieval.settings import RetrievalSettings
from services.retrieval.store import RetrievalStore

log = logging.getLogger(__name__)

SERVICE_NAME = "loraplex.retrieval.v1.RetrievalService"


def embedder_pool(settings: RetrievalSettings) -> EmbedderPool:
    paths = {settings.embedding_model: settings.embedder_path or packaged_model_dir()}
    paths.update(settings.extra_embedders)
    return EmbedderPool(settings.embedding_model, paths, settings.embed_batch_size)


class RetrievalApp(Service):
    """Ready (health SERVING, calls admitted) only once every index is loaded."""

    service_names = (SERVICE_NAME,)
    #: Inference searches for grounding; no other service calls retrieval.
    #: Inference searches; the OpenAI gateway serves vector stores and embeddings.
    service_scopes = ServiceScopes(
        SERVICE_NAME,
        inference=("SearchChunks",),
        gateway=(
            "CreateCollection",
            "GetCollection",
            "ListCollections",
            "DeleteCollection",
            "UpsertDocuments",
            "DeleteDocuments",
            "SearchChunks",
            "GetCollectionStats",
            "EmbedTexts",
        ),
    )
    starting_message = "the retrieval service is loading its indexes; retry shortly"

    def __init__(
        self,
        settings: RetrievalSettings,
        embedder: Embedder | None = None,
        kit: Kit | None = None,
    ) -> None:
        super().__init__(settings, kit)
        self.settings: RetrievalSettings = settings
        self.engine = self.kit.database(settings.database_url())
        self.store = RetrievalStore(self.engine)
        self.embedders = embedder_pool(settings)
        if embedder is not None:
            self.embedders.add(embedder)
        self.manager = CollectionManager(settings, self.store, self.embedders, self.kit.executor)
        self.servicer = RetrievalServicer()
        self.servicer.attach(self.manager)

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_RetrievalServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        if self.settings.torch_threads > 0:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        if self.settings.faiss_threads > 0:
            import faiss

            faiss.omp_set_num_threads(self.settings.faiss_threads)
        await self.manager.open()

    async def stop(self) -> None:
        await self.manager.close()
