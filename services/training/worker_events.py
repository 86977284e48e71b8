"""Reading what a worker appended to its job's events file since the last read.

The worker writes one JSON object a line, tagged with its attempt (worker.py); the
service reads from the offset it stored with the events it logged last, so a line is
logged once however often the service restarts or another replica takes over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"
#: What the event log keeps; "error" and "early_stopped" become job state instead.
LOGGED_KINDS = ("started", "step", "evaluation", "checkpoint")


@dataclass
class EventBatch:
    """The complete lines after an offset, turned into log events and job updates."""

    #: The file offset after the last complete line read.
    end: int
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: Job columns the events move (step, total_steps).
    updates: dict[str, Any] = field(default_factory=dict)
    #: Metrics the events report (merged over the job's).
    metrics: dict[str, float] = field(default_factory=dict)
    #: The reason of the last error event, if one came.
    error: str = ""
    #: Lines refused: another attempt's (a fenced worker) or cut short by a kill.
    refused: int = 0


def read_new_events(path: Path, offset: int, attempt: int) -> EventBatch | None:
    """The complete lines of `attempt` after `offset`; None when there is none new."""
    if not path.exists():
        return None
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    if end == 0:
        return None
    batch = EventBatch(end=offset + end)
    for line in data[:end].decode("utf-8", "replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # cut short when its worker was killed mid-write
            batch.refused += 1
            continue
        if event.pop("attempt", attempt) != attempt:
            batch.refused += 1  # a fenced worker of another attempt
            continue
        kind = event.pop("kind")
        event.pop("time", None)
        if kind == "error":
            batch.error = event["reason"]
        elif kind == "early_stopped":
            batch.metrics["early_stopped_at_step"] = float(event["step"])
        elif kind in LOGGED_KINDS:
            batch.events.append((kind, event))
            if kind == "started":
                batch.updates["total_steps"] = event["total_steps"]
            elif kind == "step":
                batch.updates["step"] = event["step"]
                batch.metrics["train_loss"] = event["loss"]
            elif kind == "evaluation":
                batch.metrics.update(event["metrics"])
    return batch
