"""Registry watches: one poller per process reads the event log and feeds every stream.

The event log lives in the database so that replicas share it. Each process polls
it once per interval (at once when a change is made here) for every tenant, and
hands each event to the subscriptions that follow its tenant: the database sees
one query per interval however many streams are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Iterable

from services.common.errors import LoraplexError, Unavailable
from services.registry.records import EventRecord
from services.registry.store import AdapterStore

log = logging.getLogger(__name__)

#: Events one poll reads; a longer backlog is read in further polls without waiting.
POLL_BATCH = 500


class Subscription:
    """Events of the followed tenants, in log order; a stream that falls too far behind is
    ended with UNAVAILABLE (its client resumes) rather than holding memory without bound."""

    def __init__(self, tenants: Iterable[str], max_queued: int) -> None:
        self.tenants: set[str] = set(tenants)
        self.max_queued = max_queued
        self._queue: asyncio.Queue[EventRecord | LoraplexError] = asyncio.Queue()
        self._failed = False

    def offer(self, event: EventRecord) -> None:
        """A live event from the poller, which must never wait on a slow stream."""
        if self._failed:
            return
        if self._queue.qsize() >= self.max_queued:
            self.fail(Unavailable("this watch fell behind the registry's events; reconnect"))
            return
        self._queue.put_nowait(event)

    def add_current(self, event: EventRecord) -> None:
        """Current state the stream asked for: as large as the tenants' aliases, so not
        counted against the bound (else a large snapshot would fail every reconnect)."""
        if not self._failed:
            self._queue.put_nowait(event)

    def fail(self, error: LoraplexError) -> None:
        self._failed = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(error)

    async def next(self) -> EventRecord:
        item = await self._queue.get()
        if isinstance(item, LoraplexError):
            raise item
        return item


class EventHub:
    def __init__(
        self,
        store: AdapterStore,
        run: Callable[..., Awaitable],
        poll_seconds: float = 1.0,
        max_queued: int = 10_000,
    ) -> None:
        self.store = store
        self._run = run
        self.poll_seconds = poll_seconds
        self.max_queued = max_queued
        self._subscriptions: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def notify(self) -> None:
        """A change was committed here: poll now instead of at the next interval."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def subscribe(self, tenants: Iterable[str] = ()):
        """Registers before the caller reads anything from the store, so no event is missed
        between the caller's own read and the first event the poller hands over."""
        subscription = Subscription(tenants, self.max_queued)
        self._subscriptions.add(subscription)
        if self._task is None or self._task.done():
            # A fresh context: the poller serves every stream, not the request that woke it.
            self._task = asyncio.create_task(
                self._poll(), name="registry-event-poller", context=contextvars.Context()
            )
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            if not self._subscriptions:
                self._wake.set()  # let the poller notice and stop

    async def _poll(self) -> None:
        cursor = await self._run(self.store.last_sequence)
        while self._subscriptions:
            self._wake.clear()
            try:
                events = await self._run(self.store.events_after, cursor, "", POLL_BATCH)
            except Exception:
                log.exception("reading the event log failed; retrying")
                events = []
            for event in events:
                cursor = event.sequence
                for subscription in list(self._subscriptions):
                    if event.name.tenant in subscription.tenants:
                        subscription.offer(event)
            if len(events) < POLL_BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
