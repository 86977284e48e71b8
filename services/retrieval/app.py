"""The retrieval service on the kit: settings, the `CollectionManager` core and its servicer."""

from __future__ import annotations

import logging

import grpc

from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from services.common.auth import ServiceScopes
from services.common.blobstore import open_blob_store
from services.common.kit import Kit, Service
from services.common.model_packages import packaged_model_dir
from services.retrieval.embedder import EmbedderPool, TextEmbedder
from services.retrieval.forwarding import Forwarder
from services.retrieval.manager import CollectionManager
from services.retrieval.membership import Membership
from services.retrieval.servicer import RetrievalServicer
from services.retrieval.settings import RetrievalSettings
from services.retrieval.snapshots import SnapshotStore
from services.retrieval.store import RetrievalStore

log = logging.getLogger(__name__)

SERVICE_NAME = "loraplex.retrieval.v1.RetrievalService"


def embedder_pool(settings: RetrievalSettings) -> EmbedderPool:
    paths = {settings.embedding_model: settings.embedder_path or packaged_model_dir()}
    paths.update(settings.extra_embedders)
    return EmbedderPool(
        settings.embedding_model,
        paths,
        settings.embed_batch_size,
        settings.embedder_backend,
        settings.resolved_onnx_cache_dir(),
    )


class RetrievalApp(Service):
    """Ready (health SERVING, calls admitted) once the embedder is loaded and, with
    replicas, this one has joined the live set; indexes load on first use."""

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
    starting_message = "the retrieval service is starting; retry shortly"

    def __init__(
        self,
        settings: RetrievalSettings,
        embedder: TextEmbedder | None = None,
        kit: Kit | None = None,
    ) -> None:
        super().__init__(settings, kit)
        self.settings: RetrievalSettings = settings
        self.engine = self.kit.database(settings.resolved_database_url())
        self.store = RetrievalStore(self.engine)
        self.blobs = open_blob_store(settings.snapshot_blob_settings())
        self.embedders = embedder_pool(settings)
        if embedder is not None:
            self.embedders.add(embedder)
        snapshots = SnapshotStore(self.blobs, self.store)
        self.manager = CollectionManager(
            settings, self.store, snapshots, self.embedders, self.kit.executor
        )
        self.membership = Membership(settings, self.store, self.kit.blocking, self._tick)
        self.forwarder = Forwarder(self.membership, settings.client_tls)
        self.servicer = RetrievalServicer(self.forwarder)
        self.servicer.attach(self.manager)

    async def _tick(self) -> None:
        """Each heartbeat: unload what this replica no longer serves or what is deleted."""
        await self.manager.release(self.membership.keeps)

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_RetrievalServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        if self.settings.torch_threads > 0:
            import torch

            torch.set_num_threads(self.settings.torch_threads)
        await self.manager.open()
        await self.membership.start()
        log.info("retrieval snapshots in %s; replica %s", self.blobs.url, self.membership.me)

    async def stop(self) -> None:
        await self.membership.stop()
        await self.forwarder.close()
        await self.manager.close()
