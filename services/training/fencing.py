"""One writer per job folder, even across a service crash.

A worker outliving its service (kill -9, OOM kill) would otherwise go on beside the
worker the restarted service launches for the same job, both appending events and
overwriting the checkpoint. Three layers keep that from happening:

- the worker dies with its parent: the kernel sends it SIGTERM when the service
  process dies (`PR_SET_PDEATHSIG`), and a worker whose parent is already gone when
  it starts exits at once;
- the service grants each attempt a lease: the attempt number (the job store's
  `attempts`, its epoch) written to the job folder before the worker starts. A
  worker whose lease has moved on writes nothing more and stops, and the service
  refuses events tagged with any attempt but the job's current one;
- a worker holds an exclusive lock on the job folder while it runs, so on one host
  the next attempt waits for the previous worker to exit before reading the
  checkpoint.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from services.common.atomic import write_atomic

log = logging.getLogger(__name__)

LEASE_FILE = "lease"
LOCK_FILE = "worker.lock"
_PR_SET_PDEATHSIG = 1


def grant_lease(job_dir: Path, attempt: int) -> None:
    """Makes `attempt` the only one allowed to write in `job_dir` (the service calls this)."""
    write_atomic(job_dir / LEASE_FILE, str(attempt).encode())


class Lease:
    """A worker's view of its lease: held while the folder still names its attempt."""

    def __init__(self, job_dir: Path, attempt: int | None) -> None:
        self.path = job_dir / LEASE_FILE
        #: None: a job folder from before leases existed, never fenced.
        self.attempt = attempt

    def held(self) -> bool:
        if self.attempt is None:
            return True
        try:
            return int(self.path.read_text().strip()) == self.attempt
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            return False


def die_with_parent(parent_pid: int) -> bool:
    """Asks the kernel for SIGTERM when the parent dies; False if it is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    # Checked after the request: a parent that died before it is caught here instead.
    return os.getppid() == parent_pid


def lock_folder(job_dir: Path, should_stop: Callable[[], str], poll: float = 0.2) -> IO | None:
    """Waits for the exclusive lock on `job_dir`; None if told to stop while waiting.

    The lock lives as long as the returned file stays open (the process's life).
    """
    handle = (job_dir / LOCK_FILE).open("a")
    waited = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if not waited:
                log.info("waiting for the job's previous worker to exit")
                waited = True
            if should_stop():
                with contextlib.suppress(OSError):
                    handle.close()
                return None
            time.sleep(poll)
