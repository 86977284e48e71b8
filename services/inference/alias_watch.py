"""One registry watch stream per replica, following every tenant the replica serves.

Tenants are added as they are first seen (or from settings at start-up) on the one
stream; after a reconnect every tenant is named again with its current aliases, so
nothing missed while the registry was away stays stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Protocol

from services.inference.records import AdapterEvent

log = logging.getLogger(__name__)


class EventSource(Protocol):
    def watch_tenants(
        self, additions: AsyncIterator[tuple[list[str], bool]]
    ) -> AsyncIterator[AdapterEvent]: ...


class TenantWatch:
    def __init__(
        self,
        source: EventSource,
        on_event: Callable[[AdapterEvent], Awaitable[None]],
        on_reconnect: Callable[[], None],
        max_backoff: float = 30.0,
    ) -> None:
        self.source = source
        self.on_event = on_event
        self.on_reconnect = on_reconnect
        self.max_backoff = max_backoff
        self.tenants: set[str] = set()
        self._pending: asyncio.Queue[list[str]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        #: Set each time the stream is (re)opened with every followed tenant named on it.
        self.connected = asyncio.Event()

    def follow(self, tenants: Iterable[str]) -> None:
        """Adds tenants to the stream (cheap when already followed)."""
        new = [t for t in tenants if t not in self.tenants]
        if new:
            self.tenants.update(new)
            self._pending.put_nowait(new)
        if self._task is None or self._task.done():
            # A fresh context: the stream serves every request, not the one that opened it.
            self._task = asyncio.create_task(
                self._run(), name="alias-watch", context=contextvars.Context()
            )

    async def _additions(self) -> AsyncIterator[tuple[list[str], bool]]:
        if self.tenants:
            yield sorted(self.tenants), True
        self.connected.set()
        while True:
            batch = await self._pending.get()
            while not self._pending.empty():  # many first requests at once: one message
                batch += self._pending.get_nowait()
            yield batch, True

    async def _run(self) -> None:
        backoff = 1.0
        while True:
            self._pending = asyncio.Queue()  # everyone is named again on the new stream
            self.on_reconnect()
            try:
                async for event in self.source.watch_tenants(self._additions()):
                    backoff = 1.0
                    try:
                        await self.on_event(event)
                    except Exception:
                        log.exception("handling %s for %s failed", event.kind.value, event.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep watching through registry restarts
                log.warning("alias watch interrupted (%d tenants): %s", len(self.tenants), exc)
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
