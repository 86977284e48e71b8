"""Reattaching to a local worker another service process started (no training here)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys

from services.training.executors import EXIT_KILLED, WORKER_FILE, LocalExecutor, _start_ticks
from services.training.fencing import EXIT_OK, EXIT_STOPPED, write_exit


async def _spawn(script: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-c", script)


async def _end(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()


def _record(job_dir, process, attempt: int, host: str = "") -> None:
    record = {
        "pid": process.pid,
        "ticks": _start_ticks(process.pid),
        "host": host or socket.gethostname(),
        "attempt": attempt,
    }
    (job_dir / WORKER_FILE).write_text(json.dumps(record))


async def test_a_running_worker_is_reattached_and_waited_for(tmp_path):
    # Stands in for a worker whose service was killed: it records its exit, then ends.
    script = (
        "import time, pathlib\n"
        "from services.training.fencing import write_exit\n"
        "time.sleep(0.5)\n"
        f"write_exit(pathlib.Path({str(tmp_path)!r}), 2, 0)\n"
    )
    process = await _spawn(script)
    try:
        _record(tmp_path, process, 2)
        executor = LocalExecutor(tmp_path)
        assert await executor.attach("job-1", tmp_path, 1) is None  # another attempt's
        handle = await executor.attach("job-1", tmp_path, 2)
        assert handle is not None
        waiting = asyncio.create_task(handle.wait())
        assert await asyncio.wait_for(waiting, 60) == EXIT_OK
    finally:
        await _end(process)


async def test_an_ended_or_vanished_worker(tmp_path):
    process = await _spawn("pass")
    await process.wait()
    _record(tmp_path, process, 1)
    executor = LocalExecutor(tmp_path)
    assert await executor.attach("job-1", tmp_path, 1) is None  # killed: nothing recorded
    write_exit(tmp_path, 1, EXIT_STOPPED)
    assert await executor.attach("job-1", tmp_path, 1) is None  # stopped: resume instead
    write_exit(tmp_path, 1, 1)
    handle = await executor.attach("job-1", tmp_path, 1)
    assert handle is not None and await handle.wait() == 1  # failed: conclude it


async def test_a_worker_on_another_host_is_not_taken_for_a_local_one(tmp_path):
    process = await _spawn("import time; time.sleep(30)")
    try:
        _record(tmp_path, process, 1, host="elsewhere")
        assert await LocalExecutor(tmp_path).attach("job-1", tmp_path, 1) is None
        _record(tmp_path, process, 1)
        handle = await LocalExecutor(tmp_path).attach("job-1", tmp_path, 1)
        handle.kill()
        assert await asyncio.wait_for(handle.wait(), 30) == EXIT_KILLED
    finally:
        await _end(process)
