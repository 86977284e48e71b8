"""The models a tenant may name: the base model and its adapters for it (`/v1/models`).

Ids are adapter references, so any id listed works as `model` in a generation: the
adapter's name (its newest version), each alias, and the newest version by number.
Adapters come from the registry, filtered to this engine's base model; another
tenant's adapter answers NOT_FOUND exactly like an absent one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from services.common.adapter_ref import AdapterRef, parse_ref
from services.common.errors import LoraplexError, NotFound

#: Adapters listed per request at most: one registry page each, bounded.
MAX_ADAPTERS = 2000


@dataclass(frozen=True)
class AdapterListing:
    """One adapter as the registry lists it: newest version, aliases, creation time."""

    name: str
    latest: int
    created_at: float
    aliases: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEntry:
    id: str
    created: int
    owned_by: str
    #: The base model an adapter runs on; None for the base model itself.
    parent: str | None = None


class AdapterLister(Protocol):
    async def list_adapters(
        self, tenant: str, base_model: str, limit: int
    ) -> list[AdapterListing]: ...

    async def describe(self, tenant: str, ref: AdapterRef) -> AdapterListing: ...


class ModelCatalog:
    def __init__(self, base_model: str, registry: AdapterLister) -> None:
        self.base_model = base_model
        self.registry = registry
        self.created = int(time.time())

    def base(self) -> ModelEntry:
        return ModelEntry(self.base_model, self.created, "loraplex")

    async def list(self, tenant: str) -> list[ModelEntry]:
        entries = [self.base()]
        for adapter in await self.registry.list_adapters(tenant, self.base_model, MAX_ADAPTERS):
            created = int(adapter.created_at)
            ids = [adapter.name, f"{adapter.name}@{adapter.latest}"]
            ids += [f"{adapter.name}@{alias}" for alias in sorted(adapter.aliases)]
            entries += [ModelEntry(i, created, tenant, self.base_model) for i in ids]
        return entries

    async def get(self, tenant: str, model_id: str) -> ModelEntry:
        if model_id == self.base_model:
            return self.base()
        try:
            ref = parse_ref(model_id)
        except LoraplexError:
            raise NotFound(f"the model {model_id[:200]!r} does not exist") from None
        if ref.tenant != tenant:
            raise NotFound(f"the model {model_id[:200]!r} does not exist")
        adapter = await self.registry.describe(tenant, ref)
        return ModelEntry(model_id, int(adapter.created_at), tenant, self.base_model)
