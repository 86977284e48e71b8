"""kill -9 of a real `python -m services.training`: its worker never writes beside the next one.

The old worker is frozen (SIGSTOP) before the service is killed, standing for a worker
busy in a long step: it is certain to be alive while the restarted service launches
the next attempt, and is thawed once that attempt has started (or waits for the job
folder). It must then stop without writing: the event log reads as one worker at a
time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from loraplex.training.v1 import training_service_pb2 as pb
from services.common.probes import free_port, wait_until_serving
from services.common.testing import TEST_TENANT_KEYS
from services.training.app import SERVICE_NAME
from tests.integration.training.conftest import (
    ACME,
    collect_events,
    stub,
    toy_spec,
    upload,
    wait_for,
)
from tests.unit.training.tiny_model import toy_rows

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def _start(data_dir: Path, models: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LORAPLEX_DATA_DIR": str(data_dir),
        "LORAPLEX_API_KEYS": f"acme:{TEST_TENANT_KEYS['acme']}",
        "LORAPLEX_TRAINING_PORT": str(port),
        "LORAPLEX_TRAINING_METRICS_PORT": "0",
        "LORAPLEX_TRAINING_MODELS_DIR": str(models),
        "LORAPLEX_TRAINING_REGISTRY_ADDR": "",
        "LORAPLEX_TRAINING_EVENT_POLL_SECONDS": "0.05",
        "LORAPLEX_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "services.training"], cwd=ROOT, env=env)


def _worker_pids(job_id: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = b"services.training.worker" in cmdline and any(job_id.encode() in a for a in cmdline)
        if ours and _alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    """Running or stopped; a zombie (dead, not yet reaped by init) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def _serving(port: int, process: subprocess.Popen[bytes]) -> None:
    await asyncio.to_thread(wait_until_serving, f"127.0.0.1:{port}", SERVICE_NAME, 180, process)


async def _restarted(channel: grpc.aio.Channel, job_id: str) -> bool:
    """Whether a second `started` event is in the job's log."""
    call = stub(channel).StreamJobEvents(
        pb.StreamJobEventsRequest(id=job_id, history_only=True), metadata=ACME, timeout=30
    )
    return [e.WhichOneof("event") async for e in call].count("started") >= 2


def _one_writer_at_a_time(events: list[pb.StreamJobEventsResponse]) -> list[int]:
    """Checks each run (from a `started` on): steps go up by one from where it resumed,
    checkpoints never go back; returns each run's first step."""
    firsts: list[int] = []
    expected = None
    last_checkpoint = 0
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "started":
            expected = event.started.resumed_from_step + 1
            firsts.append(expected)
            assert event.started.resumed_from_step >= last_checkpoint or last_checkpoint == 0
        elif kind == "step":
            assert expected is not None, "a step before any start"
            assert event.step.step == expected, (event.step.step, expected)
            expected += 1
        elif kind == "checkpoint":
            assert expected is not None and event.checkpoint.step == expected - 1
            last_checkpoint = event.checkpoint.step
    return firsts


async def test_killed_service_leaves_no_second_writer(tmp_path, models_dir):
    first_port = free_port()
    service = _start(tmp_path, models_dir, first_port)
    frozen: list[int] = []
    try:
        await _serving(first_port, service)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first_port}") as channel:
            dataset = await upload(channel, toy_rows(4), "colors")
            spec = toy_spec(dataset.id, max_steps=40, checkpoint_interval_steps=5)
            job = (await stub(channel).CreateJob(pb.CreateJobRequest(spec=spec), metadata=ACME)).job
            await wait_for(channel, job.id, "checkpoint", deadline=180)
        (old_worker,) = _worker_pids(job.id)
        os.kill(old_worker, signal.SIGSTOP)
        frozen.append(old_worker)
        service.send_signal(signal.SIGKILL)
        service.wait(timeout=30)

        second_port = free_port()
        service = _start(tmp_path, models_dir, second_port)
        await _serving(second_port, service)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second_port}") as channel:
            # Thaw the old worker only once the next attempt is under way: it has started
            # training, or it waits for the job folder the old worker still holds.
            log = tmp_path / "training" / "jobs" / job.id / "worker.log"
            deadline = time.monotonic() + 300
            while not (await _restarted(channel, job.id) or "previous worker" in log.read_text()):
                assert time.monotonic() < deadline, "the restarted service never relaunched"
                await asyncio.sleep(0.2)
            os.kill(old_worker, signal.SIGCONT)
            frozen.clear()
            deadline = time.monotonic() + 60
            while _alive(old_worker):
                assert time.monotonic() < deadline, "the old worker outlived its service"
                await asyncio.sleep(0.1)

            events = await collect_events(channel, job.id, deadline=600)
            kinds = [e.WhichOneof("event") for e in events]
            assert kinds[-1] == "succeeded", kinds[-5:]
            firsts = _one_writer_at_a_time(events)
            assert len(firsts) == 2 and firsts[1] > 1  # resumed from a checkpoint, once
            final = await stub(channel).GetJob(pb.GetJobRequest(id=job.id), metadata=ACME)
            assert final.job.attempts == 2 and final.job.step == 40
        assert not _worker_pids(job.id)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGKILL)
        if service.poll() is None:
            service.terminate()
            service.wait(timeout=60)
