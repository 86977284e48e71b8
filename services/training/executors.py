"""Where a job's worker runs: a local process (default) or a Kubernetes Job (k8s.py).

Both run the same entry point, `python -m services.training.worker`, on a job folder;
the service starts it, waits for its exit code and stops it, and a replica that did
not start it (the same replica restarted, or another once the job's lease lapsed)
reattaches to it with `attach`: workers outlive their service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Protocol

from services.common.atomic import write_atomic
from services.training.fencing import EXIT_STOPPED, read_exit

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Which process runs which attempt of a job (local executor).
WORKER_FILE = "worker.json"
#: The code of a worker that vanished without recording one (killed).
EXIT_KILLED = 128 + signal.SIGKILL


class WorkerHandle(Protocol):
    async def wait(self) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class Executor(Protocol):
    #: Whether workers keep running when the service shuts down cleanly (a shutdown then
    #: hands their jobs to another replica instead of stopping them).
    detached: bool

    async def start(self, job_id: str, job_dir: Path, attempt: int) -> WorkerHandle: ...

    async def attach(self, job_id: str, job_dir: Path, attempt: int) -> WorkerHandle | None:
        """The worker of `attempt`, running or ended with a recorded code; None if it is
        gone without a trace (then the job resumes from its checkpoint)."""
        ...


class EndedHandle:
    """A worker that ended while no service watched: its recorded exit code."""

    def __init__(self, code: int) -> None:
        self.code = code

    async def wait(self) -> int:
        return self.code

    def terminate(self) -> None:
        pass

    def kill(self) -> None:
        pass


class LocalHandle:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def wait(self) -> int:
        return await self.process.wait()

    def _signal(self, sig: int) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks: tells a pid from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # dead, not yet reaped
        return None
    return int(fields[19])


class AdoptedHandle:
    """A worker another service process started: waited on by pidfd, signalled by pid."""

    def __init__(self, pid: int, ticks: int, job_dir: Path, attempt: int) -> None:
        self.pid = pid
        self.ticks = ticks
        self.job_dir = job_dir
        self.attempt = attempt

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.ticks

    async def wait(self) -> int:
        """Until the process exits: its pidfd turns readable then (no polling, no reaping)."""
        with contextlib.suppress(ProcessLookupError):
            fd = os.pidfd_open(self.pid)
            try:
                if self.alive():  # the pidfd is of our process, not a reuse of its pid
                    exited = asyncio.Event()
                    loop = asyncio.get_running_loop()
                    loop.add_reader(fd, exited.set)
                    try:
                        await exited.wait()
                    finally:
                        loop.remove_reader(fd)
            finally:
                os.close(fd)
        code = await asyncio.to_thread(read_exit, self.job_dir, self.attempt)
        return EXIT_KILLED if code is None else code

    def _signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


class LocalExecutor:
    """One process per running job; its output goes to `worker.log` in the job folder.

    The process is its own session leader, so it outlives the service (kill -9, a
    crash) and the next replica on this host reattaches to it by `worker.json`.
    """

    detached = False

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root

    async def start(self, job_id: str, job_dir: Path, attempt: int) -> LocalHandle:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])
        )
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        with (job_dir / "worker.log").open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.training.worker",
                "--job-dir",
                str(job_dir),
                "--data-root",
                str(self.data_root),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        record = {
            "pid": process.pid,
            "ticks": _start_ticks(process.pid),
            "host": socket.gethostname(),
            "attempt": attempt,
        }
        await asyncio.to_thread(write_atomic, job_dir / WORKER_FILE, json.dumps(record).encode())
        log.info("job %s: worker pid %d (attempt %d)", job_id, process.pid, attempt)
        return LocalHandle(process)

    async def attach(self, job_id: str, job_dir: Path, attempt: int) -> WorkerHandle | None:
        try:
            record = json.loads(await asyncio.to_thread((job_dir / WORKER_FILE).read_text))
        except (OSError, ValueError):
            record = {}
        if record.get("attempt") == attempt and record.get("host") == socket.gethostname():
            handle = AdoptedHandle(record["pid"], record["ticks"], job_dir, attempt)
            if record["ticks"] is not None and handle.alive():
                log.info("job %s: reattached to worker pid %d", job_id, handle.pid)
                return handle
        code = await asyncio.to_thread(read_exit, job_dir, attempt)
        # A stopped attempt (a shutdown) has nothing to conclude: it resumes.
        return None if code in (None, EXIT_STOPPED) else EndedHandle(code)
