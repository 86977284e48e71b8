"""The ingest lane: one thread runs every tenant's document work, taking turns.

Embedding a large document takes minutes of CPU. Run on the shared executor it
would hold the threads (and the embedder) that searches need, and one tenant's
megabyte upload would queue every other tenant's upload behind it. Here each
upsert submits small slices of work (tokenize one document, embed a few chunks),
and the lane serves tenants round-robin, one slice at a time: a tenant with one
small document waits at most one slice per other busy tenant. Searches never
enter the lane, so they never wait behind ingest at all, and the lane's thread
runs at a lower CPU priority (a higher nice value) than the threads that serve them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class IngestLane:
    """A worker thread serving per-tenant FIFO queues in round-robin order."""

    def __init__(self, nice: int = 0, name: str = "retrieval-ingest") -> None:
        self._nice = nice
        self._queues: dict[str, collections.deque[tuple[Future[Any], Callable[[], Any]]]] = {}
        self._turns: collections.deque[str] = collections.deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, tenant: str, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(*args)` on the lane in `tenant`'s turn; cancelling drops it if not begun."""
        future: Future[T] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the ingest lane is closed")
            queue = self._queues.get(tenant)
            if queue is None:
                queue = self._queues[tenant] = collections.deque()
                self._turns.append(tenant)
            queue.append((future, lambda: fn(*args)))
            self._ready.notify()
        return await asyncio.wrap_future(future)

    def pending(self, tenant: str) -> int:
        with self._ready:
            return len(self._queues.get(tenant, ()))

    def close(self) -> None:
        """Stops after the slice in progress; queued slices are cancelled."""
        with self._ready:
            self._closed = True
            for queue in self._queues.values():
                for future, _ in queue:
                    future.cancel()
            self._queues.clear()
            self._turns.clear()
            self._ready.notify()
        self._thread.join()

    def _next(self) -> tuple[Future[Any], Callable[[], Any]] | None:
        with self._ready:
            while not self._turns and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            tenant = self._turns.popleft()
            queue = self._queues[tenant]
            item = queue.popleft()
            if queue:
                self._turns.append(tenant)  # back of the line: the others go first
            else:
                del self._queues[tenant]
            return item

    def _serve(self) -> None:
        if self._nice > 0:
            # Linux: a thread id is a valid PRIO_PROCESS target and nice is per thread.
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
        while (item := self._next()) is not None:
            future, work = item
            if not future.set_running_or_notify_cancel():
                continue  # the upsert was cancelled while this slice waited
            try:
                future.set_result(work())
            except BaseException as exc:  # handed to the awaiting upsert
                future.set_exception(exc)
