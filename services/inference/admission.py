"""Bounded admission: refuse with RESOURCE_EXHAUSTED instead of piling requests up."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from prometheus_client import Gauge

from services.common.errors import ResourceExhausted

IN_ENGINE = Gauge(
    "loraplex_inference_in_engine",
    "Requests handed to the engine and not yet finished (its queue plus running)",
    ["tenant", "adapter"],
)


class Admission:
    def __init__(self, max_pending: int, per_tenant: int) -> None:
        self.max_pending = max_pending
        self.per_tenant = per_tenant
        self._by_tenant: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        return sum(self._by_tenant.values())

    @contextlib.contextmanager
    def slot(self, tenant: str) -> Iterator[None]:
        if self.pending >= self.max_pending:
            raise ResourceExhausted(
                f"the server is at capacity ({self.max_pending} requests in flight); retry later"
            )
        if self._by_tenant[tenant] >= self.per_tenant:
            raise ResourceExhausted(
                f"tenant {tenant!r} has {self.per_tenant} requests in flight, the most allowed;"
                " retry when one finishes"
            )
        self._by_tenant[tenant] += 1
        try:
            yield
        finally:
            self._by_tenant[tenant] -= 1
