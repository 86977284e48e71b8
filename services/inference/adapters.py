"""Resolving a tenant's adapter reference to something the engine can serve.

Resolution goes through the registry once (tenant- and compatibility-checked,
returning the exact version and its digest), the files through a verified disk
cache, and loading through one shared task per adapter version, so concurrent
first requests cause a single download and load. A broken adapter fails only the
requests that name it. Aliases (`latest` included) are remembered for a short
while and corrected at once by the registry's watch stream.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client import Counter

from services.common.adapter_ref import LATEST, AdapterName, AdapterRef
from services.common.errors import LoraplexError, NotFound
from services.inference.adapter_cache import AdapterDiskCache
from services.inference.engine import AdapterHandle
from services.inference.engine_api import InferenceEngine
from services.inference.records import (
    AdapterEvent,
    AdapterEventKind,
    AdapterVersionInfo,
    EngineRequirements,
)

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
#: Alias resolutions kept before expired ones are swept.
MAX_ALIAS_ENTRIES = 10_000

Key = tuple[AdapterName, int]


class AdapterSource(Protocol):
    async def resolve(
        self, tenant: str, ref: AdapterRef, needs: EngineRequirements
    ) -> AdapterVersionInfo: ...

    async def download(self, tenant: str, version: AdapterVersionInfo, dest: Path) -> None: ...

    async def fetch(
        self,
        tenant: str,
        ref: AdapterRef,
        needs: EngineRequirements,
        dest: Path,
        wanted: Callable[[AdapterVersionInfo], bool],
    ) -> tuple[AdapterVersionInfo, bool]: ...


@dataclass(frozen=True)
class ResolvedAdapter:
    handle: AdapterHandle
    version: AdapterVersionInfo

    @property
    def ref(self) -> str:
        """ "tenant/name@version": what the result names as the adapter that served it."""
        return str(self.version)


@dataclass
class _Resolution:
    version: int
    expires_at: float


class AdapterManager:
    def __init__(
        self,
        engine: InferenceEngine,
        registry: AdapterSource,
        cache: AdapterDiskCache,
        resolve_ttl_seconds: float = 5.0,
        max_loaded: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.cache = cache
        self.resolve_ttl_seconds = resolve_ttl_seconds
        #: Bound on adapters kept loaded (vLLM's max_cpu_loras): least recently used go first.
        self.max_loaded = max(1, max_loaded)
        self.clock = clock
        self._loaded: OrderedDict[Key, ResolvedAdapter] = OrderedDict()
        self._loading: dict[Key, asyncio.Task[ResolvedAdapter]] = {}
        #: Cold loads by (adapter, version or alias) while their version is not yet known.
        self._cold: dict[tuple[AdapterName, str], asyncio.Task[ResolvedAdapter]] = {}
        self._aliases: dict[tuple[AdapterName, str], _Resolution] = {}
        self._background: set[asyncio.Task] = set()
        #: Called with each tenant on its first request (the app connects the watch stream).
        self.on_tenant: Callable[[str], None] = lambda tenant: None
        #: This replica's look-ups by result ("hit": already loaded), for benches and tests
        #: (the Prometheus counter is per process and per tenant).
        self.lookups: Tally[str] = Tally()

    @property
    def requirements(self) -> EngineRequirements:
        e = self.engine
        return EngineRequirements(e.model_name, e.max_lora_rank, e.lora_modules)

    # -- resolution -----------------------------------------------------------------------

    async def resolve(self, tenant: str, ref: AdapterRef) -> ResolvedAdapter:
        if ref.tenant != tenant:
            raise NotFound(f"adapter {ref} not found")
        self.on_tenant(tenant)
        version = ref.version or self._cached_alias(ref.adapter, ref.selector)
        if version:
            hit = self._hit(ref.adapter, version)
            if hit is not None:
                ADAPTER_CACHE.labels(tenant, str(ref.adapter), "hit").inc()
                self.lookups["hit"] += 1
                return hit
        if not self._holds(ref.adapter):
            ADAPTER_CACHE.labels(tenant, str(ref.adapter), "miss").inc()
            return await self._load_cold(tenant, ref)
        info = await self.registry.resolve(tenant, ref, self.requirements)
        if ref.selector:
            self._remember(ref.adapter, ref.selector, info.version, self.resolve_ttl_seconds)
        hit = self._hit(info.name, info.version)
        ADAPTER_CACHE.labels(tenant, str(ref.adapter), "hit" if hit else "miss").inc()
        self.lookups["hit" if hit else "miss"] += 1
        return hit or await self._load(tenant, info)

    def _holds(self, name: AdapterName) -> bool:
        """Whether any version of `name` is loaded or loading here. If none is, a request
        for it is cold: one DownloadAdapter resolves, checks and fetches it (no separate
        CheckCompatibility round trip)."""
        return any(n == name for n, _ in (*self._loaded, *self._loading, *self._cold))

    async def _load_cold(self, tenant: str, ref: AdapterRef) -> ResolvedAdapter:
        """Single-flight per reference, like `_load` per version."""
        key = (ref.adapter, str(ref.version) if ref.version else ref.selector)
        task = self._cold.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch_and_load(tenant, ref))
            self._cold[key] = task
            task.add_done_callback(lambda _: self._cold.pop(key, None))
        return await asyncio.shield(task)

    async def _fetch_and_load(self, tenant: str, ref: AdapterRef) -> ResolvedAdapter:
        staged = self.cache.staging()

        def wanted(info: AdapterVersionInfo) -> bool:
            key = (info.name, info.version)
            held = key in self._loaded or key in self._loading
            return not held and self.cache.get(info.digest) is None

        try:
            info, fetched = await self.registry.fetch(
                tenant, ref, self.requirements, staged, wanted
            )
            if ref.selector:
                self._remember(ref.adapter, ref.selector, info.version, self.resolve_ttl_seconds)
            hit = self._hit(info.name, info.version)
            if hit is not None:
                return hit
            return await self._load(tenant, info, staged if fetched else None)
        finally:  # placed in the cache by now, unless another load had it or it failed
            await asyncio.to_thread(shutil.rmtree, staged, True)

    def _hit(self, name: AdapterName, version: int) -> ResolvedAdapter | None:
        key = (name, version)
        hit = self._loaded.get(key)
        if hit is not None:
            self._loaded.move_to_end(key)
        return hit

    def _cached_alias(self, name: AdapterName, selector: str) -> int | None:
        cached = self._aliases.get((name, selector))
        if cached and cached.expires_at > self.clock():
            return cached.version
        return None

    def _remember(self, name: AdapterName, selector: str, version: int, seconds: float) -> None:
        if len(self._aliases) >= MAX_ALIAS_ENTRIES:
            now = self.clock()
            for key in [k for k, r in self._aliases.items() if r.expires_at <= now]:
                del self._aliases[key]
        self._aliases[(name, selector)] = _Resolution(version, self.clock() + seconds)

    async def _load(
        self, tenant: str, info: AdapterVersionInfo, fetched: Path | None = None
    ) -> ResolvedAdapter:
        """One load per version however many requests ask; a caller that gives up does not
        cancel it for the others. `fetched`: the files, already downloaded by a cold load."""
        key = (info.name, info.version)
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._download_and_load(tenant, info, fetched))
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _download_and_load(
        self, tenant: str, info: AdapterVersionInfo, fetched: Path | None = None
    ) -> ResolvedAdapter:
        folder = self.cache.get(info.digest)
        if folder is None:
            staged = fetched or self.cache.staging()
            if fetched is None:
                await self.registry.download(tenant, info, staged)
            folder = await self.cache.commit(info.digest, staged)
        handle = AdapterHandle(str(info), self.engine.next_adapter_id(), folder)
        try:
            await self.engine.load_adapter(handle)
        except LoraplexError:
            ADAPTER_LOADS.labels(tenant, str(info.name), "refused").inc()
            raise
        ADAPTER_LOADS.labels(tenant, str(info.name), "loaded").inc()
        resolved = ResolvedAdapter(handle, info)
        self._loaded[(info.name, info.version)] = resolved
        log.info("loaded adapter %s as engine id %d", handle.name, handle.lora_id)
        await self._evict()
        return resolved

    async def _evict(self) -> None:
        """Keeps at most `max_loaded` adapters, then the disk cache within its bytes."""
        while len(self._loaded) > self.max_loaded:
            _, old = self._loaded.popitem(last=False)
            await self.engine.unload_adapter(old.handle)
            log.info("unloaded adapter %s (least recently used)", old.handle.name)
        keep = {r.version.digest for r in self._loaded.values()}
        if self.cache.size_bytes > self.cache.max_bytes:
            await self.cache.evict_over_limit(keep)

    def loaded_names(self) -> list[str]:
        """Every loaded adapter's engine name (`tenant/name@version`), least recently used
        first: what the router metrics report as loaded on this replica."""
        return [r.handle.name for r in self._loaded.values()]

    def loaded(self, tenant: str) -> list[str]:
        return sorted(r.ref for (name, _), r in self._loaded.items() if name.tenant == tenant)

    # -- registry events ------------------------------------------------------------------

    async def on_event(self, event: AdapterEvent) -> None:
        """Applies one registry change: alias moves pre-load, pushes make `latest` stale."""
        if event.kind is AdapterEventKind.ALIAS_SET:
            self._alias_set(event)
        elif event.kind is AdapterEventKind.ALIAS_DELETED:
            self._aliases.pop((event.name, event.alias), None)
        elif event.kind is AdapterEventKind.VERSION_PUSHED:
            self._aliases.pop((event.name, LATEST), None)
        elif event.kind is AdapterEventKind.VERSION_DELETED:
            self._aliases.pop((event.name, LATEST), None)
            for key in [k for k, r in self._aliases.items() if k[0] == event.name]:
                if self._aliases[key].version == event.version:
                    del self._aliases[key]

    def forget_aliases(self) -> None:
        """Called when the watch (re)connects: what it may have missed is asked again."""
        self._aliases.clear()

    def _alias_set(self, event: AdapterEvent) -> None:
        delay = max(0.0, event.effective_at - time.time())
        if delay and event.previous_version:  # until the flip, the old version
            self._remember(event.name, event.alias, event.previous_version, delay)
        elif not delay:
            self._remember(event.name, event.alias, event.version, self.resolve_ttl_seconds)
        else:
            self._aliases.pop((event.name, event.alias), None)
        task = asyncio.create_task(self._preload(event, delay))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _preload(self, event: AdapterEvent, delay: float) -> None:
        ref = AdapterRef(event.name, version=event.version)
        try:
            await self.resolve(event.name.tenant, ref)
            log.info("pre-loaded %s for alias %s (effective in %.1fs)", ref, event.alias, delay)
        except LoraplexError as exc:
            log.warning("could not pre-load %s: %s", ref, exc.message)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
