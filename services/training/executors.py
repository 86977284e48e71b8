"""Where a job's worker runs: a local process (default) or a Kubernetes Job (k8s.py).

Both run the same entry point, `python -m services.training.worker`, on a job folder;
the service only needs to start it, wait for its exit code and stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class WorkerHandle(Protocol):
    async def wait(self) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class Executor(Protocol):
    #: Whether workers outlive the service (a shutdown then leaves them running).
    detached: bool

    async def start(self, job_id: str, job_dir: Path, attempt: int) -> WorkerHandle: ...


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


class LocalExecutor:
    """One child process per running job; its output goes to `worker.log` in the job folder."""

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
                "--parent-pid",
                str(os.getpid()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )
        log.info("job %s: worker pid %d (attempt %d)", job_id, process.pid, attempt)
        return LocalHandle(process)
