"""The registry service on the kit: settings, the `Registry` core and its servicer."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from loraplex.registry.v1 import registry_service_pb2 as pb
from loraplex.registry.v1 import registry_service_pb2_grpc as pb_grpc
from services.common.auth import ServiceScopes
from services.common.blobstore import open_blob_store
from services.common.db import sqlite_url
from services.common.kit import Kit, Service
from services.registry.registry import Registry
from services.registry.servicer import RegistryServicer
from services.registry.settings import RegistrySettings
from services.registry.store import AdapterStore

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RegistryService"].full_name


class RegistryApp(Service):
    service_names = (SERVICE_NAME,)
    starting_message = "the registry is starting; retry shortly"
    #: Inference lists (/v1/models), resolves, checks, downloads and watches; training publishes.
    service_scopes = ServiceScopes(
        SERVICE_NAME,
        service_level=("WatchTenantAdapters",),
        inference=(
            "GetAdapter",
            "ListAdapters",
            "CheckCompatibility",
            "DownloadAdapter",
            "WatchAdapters",
            "WatchTenantAdapters",
        ),
        # Training publishes, and lists versions to find what a job pushed before a crash.
        training=("PushAdapter", "SetAlias", "ListAdapterVersions"),
    )

    def __init__(self, settings: RegistrySettings, kit: Kit | None = None) -> None:
        super().__init__(settings, kit)
        self.settings: RegistrySettings = settings
        self.servicer = RegistryServicer()
        self.registry: Registry | None = None
        self._sweeper: asyncio.Task | None = None

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_RegistryServiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        """Opens the database and sweeps what a crashed upload left behind."""
        root = self.settings.service_dir("registry")
        engine = self.kit.database(self.settings.database_url or sqlite_url(root / "registry.db"))
        store = await self.kit.blocking(AdapterStore, engine)
        blobs = await self.kit.blocking(
            open_blob_store, self.settings.blob_settings(root / "blobs")
        )
        log.info("registry blobs in %s", blobs.url)
        self.registry = Registry(self.settings, store, blobs, self.kit.blocking)
        await self._sweep()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="registry-sweeper")
        self.servicer.attach(self.registry)

    async def _sweep(self) -> None:
        assert self.registry is not None
        await self.registry.sweep(
            self.settings.orphan_grace_seconds, self.settings.part_grace_seconds
        )

    async def _sweep_forever(self) -> None:
        """A push killed mid-way leaves a temp file; this removes it without a restart."""
        while True:
            await asyncio.sleep(self.settings.sweep_interval_seconds)
            try:
                await self._sweep()
            except Exception:
                log.exception("sweeping leftover push files failed; will retry")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
