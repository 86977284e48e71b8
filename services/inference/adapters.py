"""Resolving a tenant's adapter reference to something the engine can serve.

Resolution goes through the registry (tenant-checked, compatibility-checked), the
files through a verified disk cache, and loading through one lock per adapter
version, so concurrent first requests cause a single download and load. A broken
adapter fails only the requests that name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from prometheus_client import Counter

from services.common.errors import LoraplexError, NotFound
from services.inference.adapter_cache import AdapterDiskCache
from services.inference.engine import AdapterHandle, VllmEngine
from services.inference.gateways import RegistryGateway

log = logging.getLogger(__name__)

ADAPTER_CACHE = Counter(
    "loraplex_inference_adapter_cache_total",
    "Adapter look-ups by result (hit: already loaded)",
    ["tenant", "adapter", "result"],
)
ADAPTER_LOADS = Counter(
    "loraplex_inference_adapter_loads_total",
    "Adapter loads into the engine, by outcome",
    ["tenant", "adapter", "outcome"],
)


@dataclass(frozen=True)
class ResolvedAdapter:
    handle: AdapterHandle
    ref: str  # "tenant/name@version"


@dataclass
class _Resolution:
    version: int
    expires_at: float


class AdapterManager:
    def __init__(
        self,
        engine: VllmEngine,
        registry: RegistryGateway,
        cache: AdapterDiskCache,
        resolve_ttl_seconds: float = 5.0,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.cache = cache
        self.resolve_ttl_seconds = resolve_ttl_seconds
        self._loaded: dict[tuple[str, int], AdapterHandle] = {}
        self._digests: dict[tuple[str, int], str] = {}
        self._locks: defaultdict[tuple[str, int], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._aliases: dict[tuple[str, str], _Resolution] = {}
        self._watches: dict[str, asyncio.Task] = {}

    # -- resolution -----------------------------------------------------------------------

    async def resolve(self, tenant: str, ref: str) -> ResolvedAdapter:
        name, _, selector = ref.partition("@")
        if name.partition("/")[0] != tenant:
            raise NotFound(f"adapter {ref} not found")
        self.ensure_watch(tenant)
        version = self._cached_version(name, selector)
        if version is not None and (name, version) in self._loaded:
            ADAPTER_CACHE.labels(tenant, name, "hit").inc()
            return ResolvedAdapter(self._loaded[(name, version)], f"{name}@{version}")
        info = await self.registry.check(
            tenant, ref, self.engine.model_name, self.engine.settings.max_lora_rank,
            self.engine.lora_modules,
        )  # fmt: skip
        if selector and not selector.isdigit():
            self._aliases[(name, selector)] = _Resolution(
                info.version, time.monotonic() + self.resolve_ttl_seconds
            )
        key = (name, info.version)
        hit = key in self._loaded
        ADAPTER_CACHE.labels(tenant, name, "hit" if hit else "miss").inc()
        handle = self._loaded[key] if hit else await self._load(tenant, info)
        return ResolvedAdapter(handle, f"{name}@{info.version}")

    def _cached_version(self, name: str, selector: str) -> int | None:
        if selector.isdigit():
            return int(selector)
        cached = self._aliases.get((name, selector or "latest"))
        if cached and cached.expires_at > time.monotonic():
            return cached.version
        return None

    async def _load(self, tenant: str, info) -> AdapterHandle:
        key = (info.name, info.version)
        async with self._locks[key]:
            if key in self._loaded:
                return self._loaded[key]
            folder = self.cache.get(info.digest)
            if folder is None:
                staged = self.cache.staging()
                await self.registry.download(tenant, f"{info.name}@{info.version}", staged)
                folder = self.cache.commit(info.digest, staged)
            handle = AdapterHandle(
                f"{info.name}@{info.version}", self.engine.next_adapter_id(), folder
            )
            try:
                await self.engine.load_adapter(handle)
            except LoraplexError:
                ADAPTER_LOADS.labels(tenant, info.name, "refused").inc()
                raise
            ADAPTER_LOADS.labels(tenant, info.name, "loaded").inc()
            self._loaded[key] = handle
            self._digests[key] = info.digest
            await self._evict()
            log.info("loaded adapter %s as engine id %d", handle.name, handle.lora_id)
            return handle

    async def _evict(self) -> None:
        keep = set(self._digests.values())
        # Disk first: an adapter the engine may reload must keep its files.
        over = self.cache.size_bytes > self.cache.max_bytes
        if not over:
            return
        oldest = sorted(self._loaded, key=lambda k: self._loaded[k].lora_id)
        for key in oldest[: max(1, len(oldest) // 4)]:
            handle = self._loaded.pop(key)
            keep.discard(self._digests.pop(key))
            await self.engine.unload_adapter(handle)
        self.cache.evict_over_limit(keep)

    def loaded(self, tenant: str) -> list[str]:
        return sorted(
            h.name for (name, _), h in self._loaded.items() if name.startswith(f"{tenant}/")
        )

    # -- alias watch ----------------------------------------------------------------------

    def ensure_watch(self, tenant: str) -> None:
        """Follows the tenant's registry events so alias flips find their adapter loaded."""
        task = self._watches.get(tenant)
        if task is None or task.done():
            self._watches[tenant] = asyncio.create_task(self._follow(tenant))

    async def _follow(self, tenant: str) -> None:
        from loraplex.registry.v1 import registry_service_pb2 as pb

        backoff = 1.0
        while True:
            try:
                async for event in self.registry.watch(tenant):
                    backoff = 1.0
                    if event.kind == pb.ADAPTER_EVENT_KIND_ALIAS_SET:
                        await self._preload(tenant, event)
                    elif event.kind == pb.ADAPTER_EVENT_KIND_ALIAS_DELETED:
                        self._aliases.pop((event.name, event.alias), None)
                    elif event.kind == pb.ADAPTER_EVENT_KIND_VERSION_PUSHED:
                        self._aliases.pop((event.name, "latest"), None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep watching through registry restarts
                log.warning("alias watch for %s interrupted: %s", tenant, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _preload(self, tenant: str, event) -> None:
        effective = event.effective_at.ToDatetime().timestamp()
        delay = max(0.0, effective - time.time())
        ref = f"{event.name}@{event.version}"
        try:
            await self.resolve(tenant, ref)
            log.info("pre-loaded %s for alias %s (effective in %.1fs)", ref, event.alias, delay)
        except LoraplexError as exc:
            log.warning("could not pre-load %s: %s", ref, exc.message)
        # Until the flip, keep the old resolution; after it, the new one.
        self._aliases[(event.name, event.alias)] = _Resolution(
            event.previous_version if delay and event.previous_version else event.version,
            time.monotonic() + delay if delay else time.monotonic() + self.resolve_ttl_seconds,
        )

    async def close(self) -> None:
        for task in self._watches.values():
            task.cancel()
        for task in self._watches.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
