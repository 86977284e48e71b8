"""vLLM general plugin: an engine process ends when the process that started it is gone.

vLLM runs its EngineCore in a child process of the inference server, and nothing in it
watches the server: when the server dies without shutting the engine down (SIGKILL, the
OOM killer, a chaos test's kill), the engine core and its worker live on, orphaned,
holding 1-3 GiB each until someone kills them by hand. A pod's end takes every process
of its container along; on one machine (`loraplex suite up`, the tests) they pile up.

Registered as the `loraplex_engine_lifeline` entry point of `vllm.general_plugins`, so
vLLM calls `register()` in every engine process. In a process that multiprocessing
started, a daemon thread checks once a second that its parent is still the process that
started it; once it is not (the child was re-parented), the process ends with SIGKILL:
there is nobody left to answer, and nothing of the engine's is durable. The server's
own process (no multiprocessing parent) is left alone.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable

POLL_SECONDS = 1.0

_lock = threading.Lock()
_watching = False


def register() -> None:
    """vLLM's plugin hook; may run several times in one process."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        watch_parent(parent.pid)


def watch_parent(
    parent_pid: int, poll_seconds: float = POLL_SECONDS, orphaned: Callable[[], None] | None = None
) -> bool:
    """Starts the watch once per process (False when one already runs); `orphaned` runs
    when the parent is gone (default: SIGKILL this process)."""
    global _watching
    with _lock:
        if _watching:
            return False
        _watching = True
    threading.Thread(
        target=_watch,
        args=(parent_pid, poll_seconds, orphaned or _end),
        name="loraplex-lifeline",
        daemon=True,
    ).start()
    return True


def _watch(parent_pid: int, poll_seconds: float, orphaned: Callable[[], None]) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_seconds)
    orphaned()


def _end() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
