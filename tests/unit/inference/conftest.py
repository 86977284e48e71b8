"""A real registry on loopback (SQLite) and the inference core over a fake engine."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest_asyncio

from loraplex.registry.v1 import registry_service_pb2 as reg_pb
from loraplex.registry.v1 import registry_service_pb2_grpc as reg_grpc
from services.common.calls import Remote
from services.common.testing import (
    TEST_SERVICE_KEYS,
    RunningServer,
    running_server,
    tenant_metadata,
)
from services.inference.adapter_cache import AdapterDiskCache
from services.inference.adapters import AdapterManager
from services.inference.gateways import RegistryGateway
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from tests.integration.registry.adapters import make_lora_adapter
from tests.unit.inference.fake_engine import FakeEngine


class CountingRegistry:
    """The real gateway, counting what the core asks of the registry."""

    def __init__(self, gateway: RegistryGateway) -> None:
        self.gateway = gateway
        self.resolves: list[str] = []
        self.downloads: list[str] = []
        #: Cold loads: one DownloadAdapter that resolves, checks and fetches.
        self.fetches: list[str] = []

    async def resolve(self, tenant, ref, needs):
        self.resolves.append(str(ref))
        return await self.gateway.resolve(tenant, ref, needs)

    async def download(self, tenant, version, dest):
        self.downloads.append(str(version))
        await self.gateway.download(tenant, version, dest)

    async def fetch(self, tenant, ref, needs, dest, wanted):
        self.fetches.append(str(ref))
        return await self.gateway.fetch(tenant, ref, needs, dest, wanted)

    def watch_tenants(self, additions):
        return self.gateway.watch_tenants(additions)


@dataclass
class Rig:
    registry: RunningServer
    app: RegistryApp
    gateway: RegistryGateway
    counting: CountingRegistry
    engine: FakeEngine
    tmp: Path

    @property
    def stub(self) -> reg_grpc.RegistryServiceStub:
        return reg_grpc.RegistryServiceStub(self.registry.channel)

    def manager(self, **kwargs) -> AdapterManager:
        cache = AdapterDiskCache(self.tmp / "cache", kwargs.pop("cache_bytes", 1 << 30))
        return AdapterManager(self.engine, self.counting, cache, **kwargs)

    async def push(self, tenant: str, name: str, seed: int = 0, aliases=()) -> int:
        folder = make_lora_adapter(
            self.tmp / f"src-{name.replace('/', '-')}-{seed}", seed=seed, base_model="loraplex/fake"
        )
        files = sorted(p for p in folder.iterdir() if p.is_file())

        async def requests():
            manifest = [
                reg_pb.FileManifest(
                    path=p.name,
                    size_bytes=p.stat().st_size,
                    sha256=hashlib.sha256(p.read_bytes()).hexdigest(),
                )
                for p in files
            ]
            yield reg_pb.PushAdapterRequest(
                header=reg_pb.PushHeader(name=name, files=manifest, aliases=list(aliases))
            )
            for p in files:
                yield reg_pb.PushAdapterRequest(
                    chunk=reg_pb.FileChunk(path=p.name, data=p.read_bytes())
                )

        reply = await self.stub.PushAdapter(requests(), metadata=tenant_metadata(tenant))
        return reply.version.version


@pytest_asyncio.fixture(loop_scope="session")
async def rig(tmp_path) -> AsyncIterator[Rig]:
    settings = RegistrySettings(
        data_dir=tmp_path / "data", watch_poll_seconds=0.2, orphan_grace_seconds=0
    )
    app = RegistryApp(settings)
    async with running_server(settings, app) as registry:
        remote = Remote("registry", registry.target, TEST_SERVICE_KEYS["inference"])
        gateway = RegistryGateway(remote)
        try:
            yield Rig(registry, app, gateway, CountingRegistry(gateway), FakeEngine(), tmp_path)
        finally:
            await remote.close()
