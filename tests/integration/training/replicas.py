"""Training services as real processes (so they can be killed with SIGKILL), and what to
check about a job's history afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from loraplex.registry.v1 import registry_service_pb2 as reg_pb
from loraplex.registry.v1 import registry_service_pb2_grpc as reg_grpc
from loraplex.training.v1 import training_service_pb2 as pb
from services.common.probes import wait_until_serving
from services.common.testing import TEST_SERVICE_KEYS, TEST_TENANT_KEYS, tenant_metadata
from services.training.app import SERVICE_NAME

ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")
#: Short leases keep the takeover tests quick: the others wait LEASE after a death.
LEASE, BEAT = 4.0, 0.5


def start(
    data_dir: Path, models: Path, port: int, database_url: str = "", registry: str = ""
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LORAPLEX_DATA_DIR": str(data_dir),
        "LORAPLEX_API_KEYS": f"acme:{TEST_TENANT_KEYS['acme']}",
        "LORAPLEX_TRAINING_PORT": str(port),
        "LORAPLEX_TRAINING_METRICS_PORT": "0",
        "LORAPLEX_TRAINING_MODELS_DIR": str(models),
        "LORAPLEX_TRAINING_DATABASE_URL": database_url,
        "LORAPLEX_TRAINING_REGISTRY_ADDR": registry,
        "LORAPLEX_TRAINING_SERVICE_KEY": TEST_SERVICE_KEYS["training"] if registry else "",
        "LORAPLEX_TRAINING_EVENT_POLL_SECONDS": "0.05",
        "LORAPLEX_TRAINING_LEASE_SECONDS": str(LEASE),
        "LORAPLEX_TRAINING_HEARTBEAT_SECONDS": str(BEAT),
        "LORAPLEX_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "services.training"], cwd=ROOT, env=env)


async def serving(port: int, process: subprocess.Popen[bytes]) -> None:
    await asyncio.to_thread(wait_until_serving, f"127.0.0.1:{port}", SERVICE_NAME, 300, process)


def replica_id(port: int) -> str:
    """The identity a replica on `port` takes in job leases (the default)."""
    return f"{socket.gethostname()}:{port}"


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def worker_pid(job_dir: Path) -> int:
    return int(json.loads((job_dir / "worker.json").read_text())["pid"])


@contextlib.contextmanager
def reaping_workers(jobs_root: Path) -> Iterator[None]:
    """Kills the workers a test orphaned (they outlive killed services by design)."""
    try:
        yield
    finally:
        for record in jobs_root.glob("*/worker.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                os.kill(int(json.loads(record.read_text())["pid"]), signal.SIGKILL)


def kinds(events: list[pb.StreamJobEventsResponse]) -> list[str]:
    return [e.WhichOneof("event") for e in events]


def runs(events: list[pb.StreamJobEventsResponse]) -> list[list[int]]:
    """The steps of each run (from a `started` on), checking one writer at a time: steps
    go up by one from where the run resumed, checkpoints never go back."""
    found: list[list[int]] = []
    expected = None
    last_checkpoint = 0
    for event in events:
        kind = event.WhichOneof("event")
        if kind == "started":
            assert event.started.resumed_from_step >= last_checkpoint
            expected = event.started.resumed_from_step + 1
            found.append([])
        elif kind == "step":
            assert expected is not None, "a step before any start"
            assert event.step.step == expected, (event.step.step, expected)
            found[-1].append(expected)
            expected += 1
        elif kind == "checkpoint":
            assert expected is not None and event.checkpoint.step == expected - 1
            last_checkpoint = event.checkpoint.step
    return found


def file_steps(job_dir: Path, attempt: int) -> list[int]:
    """The steps `attempt`'s worker wrote to the job's events file."""
    try:
        lines = (job_dir / "events.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    steps = []
    for line in lines:
        with contextlib.suppress(ValueError):  # the last line may be half written
            event = json.loads(line)
            if event["kind"] == "step" and event.get("attempt") == attempt:
                steps.append(event["step"])
    return steps


async def versions_of(channel, name: str, training_job: str) -> list[int]:
    """The registry versions of `name` that `training_job` pushed."""
    reply = await reg_grpc.RegistryServiceStub(channel).ListAdapterVersions(
        reg_pb.ListAdapterVersionsRequest(name=name, page_size=500),
        metadata=tenant_metadata("acme"),
    )
    return [v.version for v in reply.versions if v.lineage["training_job"] == training_job]


async def until(check: Callable[[], T], deadline: float = 600.0) -> T:
    """Polls `check` (on files or rows another process writes) until it returns truth."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < end, "timed out waiting"
        await asyncio.sleep(0.05)
