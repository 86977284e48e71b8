"""The OpenAI platform routes that are not inference's: files, fine-tuning jobs, vector
stores and embeddings, on training and retrieval (docs/architecture.md, docs/openai.md)."""

from __future__ import annotations

import grpc
from fastapi import FastAPI, Response

from services.common.calls import CallPolicy
from services.common.http import HttpFrontEnd
from services.common.kit import Kit, Service
from services.gateway.files import FileRoutes
from services.gateway.fine_tuning import FineTuningRoutes
from services.gateway.proxy import InferenceProxy
from services.gateway.settings import GatewaySettings
from services.gateway.store import GatewayStore
from services.gateway.upstream import RetrievalUpstream, TrainingUpstream
from services.gateway.vector_stores import VectorStoreRoutes

#: Multipart framing and form fields on top of the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024


class GatewayApp(Service):
    """HTTP only (its gRPC front end carries liveness and reflection); `GET /health` is
    readiness, since the gateway names no gRPC service of its own."""

    service_names = ()
    starting_message = "the gateway is starting; retry shortly"

    def __init__(self, settings: GatewaySettings, kit: Kit | None = None) -> None:
        super().__init__(settings, kit)
        self.settings: GatewaySettings = settings
        self.api = FastAPI(
            title="loraplex gateway (OpenAI-compatible)", docs_url=None, redoc_url=None
        )
        self.proxy = InferenceProxy(settings.inference_url) if settings.inference_url else None

        @self.api.get("/health", include_in_schema=False)
        async def health() -> Response:
            """Public: 200 once started (probes, `suite up`), 503 before."""
            return Response(status_code=200 if self.readiness.ready else 503)

        self.front_ends.append(
            HttpFrontEnd(
                self.api,
                "openai_port",
                max_body_bytes=settings.max_file_bytes + FORM_OVERHEAD_BYTES,
                public_paths=("/health",),
            )
        )

    def register(self, server: grpc.aio.Server) -> None:
        """No business RPCs."""

    async def start(self) -> None:
        s = self.settings
        engine = self.kit.database(s.resolved_database_url())
        store = await self.kit.blocking(GatewayStore, engine)
        training = TrainingUpstream(
            self.kit.remote(
                "training", s.training_addr, s.service_key,
                CallPolicy(timeout=s.training_timeout_seconds),
            )
        )  # fmt: skip
        retrieval = RetrievalUpstream(
            self.kit.remote(
                "retrieval", s.retrieval_addr, s.service_key,
                CallPolicy(timeout=s.retrieval_timeout_seconds),
            )
        )  # fmt: skip
        blocking = self.kit.blocking
        self.api.include_router(FileRoutes(store, training, blocking, s.max_file_bytes).router)
        self.api.include_router(FineTuningRoutes(store, training, blocking).router)
        self.api.include_router(VectorStoreRoutes(store, retrieval, blocking).router)
        if self.proxy is not None:
            self.api.include_router(self.proxy.router)
