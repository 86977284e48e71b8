"""One writer per job folder, across service crashes and replicas.

A worker outlives its service (kill -9, OOM kill, a rolling update of the service
alone): the restarted replica, or the replica that takes the job over once its lease
lapsed, reattaches to it (`worker.json` says which process runs which attempt, and
`exit.json` how an attempt ended when nobody was watching). When a replica launches a
new attempt instead, three layers keep the old worker from writing beside it:

- the service grants each attempt a lease: the attempt number (the job store's
  `attempts`) written to the job folder before the worker starts. A worker whose lease
  has moved on writes nothing more and stops, and the service refuses events tagged
  with any attempt but the job's current one;
- a worker holds an exclusive lock on the job folder while it runs, so on one host
  the next attempt waits for the previous worker to exit before reading the
  checkpoint;
- the service's own writes about the job are fenced by its database lease
  (services.common.leases), so a replica that lost the job cannot conclude it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from services.common.atomic import write_atomic

log = logging.getLogger(__name__)

LEASE_FILE = "lease"
LOCK_FILE = "worker.lock"
EXIT_FILE = "exit.json"
#: A worker's exit codes: done, failed (its last event says why), stopped (resumable).
EXIT_OK, EXIT_FAILED, EXIT_STOPPED = 0, 1, 3


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


def write_exit(job_dir: Path, attempt: int | None, code: int) -> None:
    """How an attempt ended, for a service that was not watching when it did."""
    write_atomic(job_dir / EXIT_FILE, json.dumps({"attempt": attempt, "code": code}).encode())


def read_exit(job_dir: Path, attempt: int) -> int | None:
    """The exit code `attempt` recorded; None if it has not ended (or was killed)."""
    try:
        record = json.loads((job_dir / EXIT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return int(record["code"]) if record.get("attempt") == attempt else None


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
