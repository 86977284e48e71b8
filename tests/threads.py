"""Calls started together on threads, to provoke the races replicas and pools meet."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def at_once(calls: Sequence[Callable[[], T]]) -> tuple[list[T], list[BaseException]]:
    """Runs each call on its own thread, all released by one barrier; returns the results
    and the errors (each call's error is kept, not raised, so a test sees them all)."""
    barrier = threading.Barrier(len(calls))
    results: list[T] = []
    errors: list[BaseException] = []

    def run(call: Callable[[], T]) -> None:
        barrier.wait()
        try:
            results.append(call())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors
