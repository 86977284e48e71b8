"""Loaded collections, least recently used first, within a memory budget.

A collection is loaded on first use (one load per collection however many calls
arrive at once) and unloaded when the loaded indexes together pass the budget.
Nothing is loaded at start: a replica holds only the tenants it is asked about.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from services.retrieval.live import LiveCollection

Key = tuple[str, str]


class CollectionCache:
    """Not thread-safe: used from the event loop only."""

    def __init__(self, budget_bytes: int = 0) -> None:
        #: 0: no limit.
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[Key, LiveCollection] = OrderedDict()
        self._loading: dict[Key, asyncio.Future[LiveCollection]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def values(self) -> list[LiveCollection]:
        return list(self._items.values())

    def get(self, key: Key) -> LiveCollection | None:
        live = self._items.get(key)
        if live is not None:
            self._items.move_to_end(key)
        return live

    async def get_or_load(
        self, key: Key, load: Callable[[], Awaitable[LiveCollection]]
    ) -> LiveCollection:
        """The loaded collection, loading it once however many callers wait for it."""
        live = self.get(key)
        if live is not None:
            return live
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[LiveCollection] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            live = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters, if any, get it through the shield
            raise
        finally:
            self._loading.pop(key, None)
        self.put(live)
        future.set_result(live)
        return live

    def put(self, live: LiveCollection) -> None:
        self._items[live.key] = live
        self._items.move_to_end(live.key)

    def pop(self, key: Key) -> LiveCollection | None:
        return self._items.pop(key, None)

    def used_bytes(self) -> int:
        return sum(live.memory_bytes() for live in self._items.values())

    def over_budget(self) -> list[LiveCollection]:
        """Removes and returns the least recently used collections until the rest fit
        (the most recently used one always stays)."""
        if self.budget_bytes <= 0:
            return []
        victims = []
        used = self.used_bytes()
        while used > self.budget_bytes and len(self._items) > 1:
            _, live = self._items.popitem(last=False)
            used -= live.memory_bytes()
            victims.append(live)
        return victims
