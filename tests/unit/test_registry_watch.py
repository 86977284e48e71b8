"""A registry watch subscription: bounded for live events, never for the asked-for state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.common.adapter_ref import AdapterName
from services.common.errors import Unavailable
from services.registry.records import EventKind, EventRecord
from services.registry.watch import Subscription


def record(sequence: int) -> EventRecord:
    moment = datetime.now(UTC)
    name = AdapterName("acme", "bot")
    return EventRecord(sequence, EventKind.VERSION_PUSHED, name, sequence, "", 0, moment, moment)


async def test_a_stream_that_falls_behind_ends_unavailable():
    subscription = Subscription({"acme"}, max_queued=3)
    for n in range(3):
        subscription.offer(record(n + 1))
    assert (await subscription.next()).sequence == 1
    subscription.offer(record(4))
    subscription.offer(record(5))  # a fourth queued live event: over the bound
    with pytest.raises(Unavailable, match="fell behind"):
        await subscription.next()


async def test_current_state_is_not_bounded():
    subscription = Subscription({"acme"}, max_queued=2)
    for n in range(10):
        subscription.add_current(record(n + 1))
    assert [(await subscription.next()).sequence for _ in range(10)] == list(range(1, 11))
