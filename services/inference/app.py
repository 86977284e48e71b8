"""Wires the engine, adapter manager, gateways and servicer for the server bootstrap."""

from __future__ import annotations

import asyncio
import logging

import grpc

from loraplex.inference.v1 import inference_service_pb2 as pb
from loraplex.inference.v1 import inference_service_pb2_grpc as pb_grpc
from services.common.calls import CallPolicy
from services.common.http import HttpFrontEnd
from services.common.kit import Kit, Service
from services.inference.adapter_cache import AdapterDiskCache
from services.inference.adapters import AdapterManager
from services.inference.admission import Admission
from services.inference.alias_watch import TenantWatch
from services.inference.catalog import ModelCatalog
from services.inference.engine import VllmEngine
from services.inference.gateways import RegistryGateway, RetrievalGateway
from services.inference.generation import InferenceCore
from services.inference.openai_http import OpenAIRoutes, openai_app
from services.inference.router_metrics import LOADED_ADAPTERS
from services.inference.servicer import InferenceServicer
from services.inference.settings import InferenceSettings
from services.inference.similarity import SentenceSimilarity

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name


class InferenceApp(Service):
    service_names = (SERVICE_NAME,)
    starting_message = "the model is still loading; retry shortly"

    def __init__(
        self, settings: InferenceSettings, engine: VllmEngine | None = None, kit: Kit | None = None
    ) -> None:
        """`engine` lets tests share one started engine between apps."""
        super().__init__(settings, kit)
        self.settings: InferenceSettings = settings
        self.engine = engine
        self._owns_engine = engine is None
        self.servicer = InferenceServicer()
        self.core: InferenceCore | None = None
        # The OpenAI-compatible HTTP edge over the same core (services/inference/openai_http.py).
        self.openai = OpenAIRoutes()
        self.front_ends.append(
            HttpFrontEnd(
                openai_app(self.openai, self.readiness),
                "openai_port",
                max_body_bytes=settings.openai_max_body_bytes,
                public_paths=("/health",),
            )
        )

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_InferenceServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        """Loads the model; the service reports ready only after this returns."""
        s = self.settings
        if self.engine is None:
            self.engine = VllmEngine(s)
            await asyncio.to_thread(self.engine.start)
        if not s.service_key:
            log.warning("no LORAPLEX_INFERENCE_SERVICE_KEY: adapters and RAG will be unavailable")
        similarity = None
        if s.relevance_model:  # the grounding score's embedder (docs/grounding.md)
            try:
                similarity = await asyncio.to_thread(SentenceSimilarity, s.relevance_model)
            except (ImportError, RuntimeError) as error:  # an image without the ml extra
                log.warning(
                    "relevance embedder %r unavailable (%s): the grounding score's relevance"
                    " is lexical only, which its calibration was not fitted for",
                    s.relevance_model, error,
                )  # fmt: skip
        registry = RegistryGateway(
            self.kit.remote(
                "registry",
                s.registry_addr,
                s.service_key,
                CallPolicy(timeout=s.registry_timeout_seconds),
            )
        )
        adapters = AdapterManager(
            self.engine,
            registry,
            AdapterDiskCache(s.service_dir("inference") / "adapters", s.adapter_cache_bytes),
            max_loaded=max(s.max_cpu_loras, s.max_loras),
        )
        if s.router_metrics:
            LOADED_ADAPTERS.export(adapters, s.max_loras)
        # One registry stream for every tenant this replica serves.
        self.watch = TenantWatch(registry, adapters.on_event, adapters.forget_aliases)
        adapters.on_tenant = lambda tenant: self.watch.follow((tenant,))
        self.core = InferenceCore(
            s,
            self.engine,
            adapters,
            RetrievalGateway(
                self.kit.remote(
                    "retrieval",
                    s.retrieval_addr,
                    s.service_key,
                    CallPolicy(timeout=s.retrieval_timeout_seconds),
                )
            ),
            Admission(s.max_pending, s.per_tenant_concurrency),
            similarity=similarity,
        )
        if s.watch_tenants:
            self.watch.follow(s.watch_tenants)
        self.servicer.attach(self.core)
        self.openai.attach(self.core, ModelCatalog(self.engine.model_name, registry))

    async def stop(self) -> None:
        if self.core is not None:
            LOADED_ADAPTERS.forget(self.core.adapters)
            await self.watch.close()
            await self.core.adapters.close()
        if self._owns_engine and self.engine is not None:
            self.engine.shutdown()
