"""The registry service on the kit: settings, the `Registry` core and its servicer."""

from __future__ import annotations

import grpc

from loraplex.registry.v1 import registry_service_pb2 as pb
from loraplex.registry.v1 import registry_service_pb2_grpc as pb_grpc
from services.common.db import sqlite_url
from services.common.kit import Kit, Service
from services.registry.blobs import BlobStore
from services.registry.registry import Registry
from services.registry.servicer import RegistryServicer
from services.registry.settings import RegistrySettings
from services.registry.store import AdapterStore

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RegistryService"].full_name


class RegistryApp(Service):
    service_names = (SERVICE_NAME,)
    starting_message = "the registry is starting; retry shortly"

    def __init__(self, settings: RegistrySettings, kit: Kit | None = None) -> None:
        super().__init__(settings, kit)
        self.settings: RegistrySettings = settings
        self.servicer = RegistryServicer()

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_RegistryServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        """Opens the database and sweeps what a crashed upload left behind."""
        root = self.settings.service_dir("registry")
        engine = self.kit.database(self.settings.database_url or sqlite_url(root / "registry.db"))
        store = await self.kit.blocking(AdapterStore, engine)
        registry = Registry(self.settings, store, BlobStore(root / "blobs"), self.kit.blocking)
        await registry.sweep(self.settings.orphan_grace_seconds)
        self.servicer.attach(registry)
