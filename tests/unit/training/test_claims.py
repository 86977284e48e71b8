"""Job managers of several replicas on one job store, with stand-in workers (no training).

The workers are futures a test drives: it writes their events file and decides when
and how they end, so claims, takeovers, reattaching and publishing can be checked in
a second. The real thing (processes, PostgreSQL, SIGKILL) is in
tests/integration/training/test_replicas.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.common.db import make_engine, sqlite_url
from services.common.leases import LeaseLost
from services.training.jobs import JobManager
from services.training.publisher import PublishedVersion
from services.training.settings import TrainingSettings
from services.training.spec import DatasetInput, JobSpec, PublishSettings
from services.training.store import DatasetRecord, TrainingStore
from services.training.uploads import DatasetManager


class Worker:
    """A worker process stand-in: the test writes its events and ends it."""

    def __init__(self, job_dir: Path, attempt: int) -> None:
        self.job_dir = job_dir
        self.attempt = attempt
        self.exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        return await asyncio.shield(self.exit)

    def terminate(self) -> None:
        if not self.exit.done():
            self.exit.set_result(3)  # a shutdown: checkpoint and stop

    def kill(self) -> None:
        if not self.exit.done():
            self.exit.set_result(137)

    def emit(self, kind: str, **payload: object) -> None:
        line = {"kind": kind, "time": time.time(), "attempt": self.attempt, **payload}
        with (self.job_dir / "events.jsonl").open("a") as handle:
            handle.write(json.dumps(line) + "\n")

    def run_steps(self, first: int, last: int) -> None:
        for step in range(first, last + 1):
            self.emit("step", step=step, loss=1.0 / step, learning_rate=0.01, epoch=0.0,
                      tokens_per_second=1.0, eta_seconds=0.0)  # fmt: skip

    def succeed(self) -> None:
        (self.job_dir / "artifact").mkdir(exist_ok=True)
        result = {"metrics": {"test_loss": 0.5}, "artifact_kind": "adapter"}
        result["base_model_sha256"] = "b" * 64
        (self.job_dir / "result.json").write_text(json.dumps(result))
        self.exit.set_result(0)


@dataclass
class Host:
    """One machine's processes: every replica's executor on it sees every worker."""

    workers: dict[tuple[str, int], Worker] = field(default_factory=dict)
    starts: list[tuple[str, int]] = field(default_factory=list)
    #: Whether starting a worker fails (a cluster that refuses the Job).
    refuse: bool = False


class Executor:
    detached = False

    def __init__(self, host: Host) -> None:
        self.host = host

    async def start(self, job_id: str, job_dir: Path, attempt: int) -> Worker:
        if self.host.refuse:
            raise RuntimeError("the cluster refused the pod")
        worker = Worker(job_dir, attempt)
        self.host.workers[(job_id, attempt)] = worker
        self.host.starts.append((job_id, attempt))
        return worker

    async def attach(self, job_id: str, job_dir: Path, attempt: int) -> Worker | None:
        """Like LocalExecutor.attach: running, or ended with a code worth concluding."""
        worker = self.host.workers.get((job_id, attempt))
        if worker is None or (worker.exit.done() and worker.exit.result() in (3, 137)):
            return None  # gone unrecorded (killed) or stopped: resume from the checkpoint
        return worker


@dataclass
class Publisher:
    pushed: list[tuple[str, str]] = field(default_factory=list)  # (name, training job)

    async def push(self, tenant, name, folder, lineage, metrics, description):
        self.pushed.append((name, lineage["training_job"]))
        return PublishedVersion(name, len(self.pushed))

    async def set_alias(self, tenant, name, alias, version) -> None:
        pass

    async def find(self, tenant, name, training_job):
        for version, pushed in enumerate(self.pushed, 1):
            if pushed == (name, training_job):
                return PublishedVersion(name, version)
        return None


async def _blocking(fn: Callable, *args, **kwargs):
    return await asyncio.to_thread(fn, *args, **kwargs)


async def until(check: Callable[[], object], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
def engine(tmp_path):
    """SQLite here; tests/integration/training/test_claims_postgres.py runs these on PostgreSQL."""
    engine = make_engine(sqlite_url(tmp_path / "training.db"))
    yield engine
    engine.dispose()


@pytest.fixture
def world(tmp_path, engine):
    models = tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    (models / "tiny" / "config.json").write_text("{}")
    store = TrainingStore(engine)
    store.add_dataset(
        DatasetRecord("ds-1", "acme", "colors", "instruction", 1, 1, "a" * 64, created_at=1.0)
    )
    return tmp_path, models, store, Host(), Publisher()


def _manager(world, replica: str, lease: float = 0.6, workers: int = 1) -> JobManager:
    root, models, store, host, publisher = world
    settings = TrainingSettings(
        data_dir=root, models_dir=models, replica_id=replica, workers=workers,
        lease_seconds=lease, heartbeat_seconds=0.1, event_poll_seconds=0.02,
        cancel_grace_seconds=1,
    )  # fmt: skip
    datasets = DatasetManager(settings, store)
    return JobManager(settings, store, datasets, Executor(host), publisher, _blocking)


def _job(store: TrainingStore) -> str:
    spec = JobSpec("tiny", [DatasetInput("ds-1")], publish=PublishSettings("acme/colors"))
    return store.create_job("acme", spec.to_dict()).id


def _die(manager: JobManager) -> None:
    """kill -9 of the replica: its tasks stop, nothing is handed back."""
    manager._closing = True
    for task in [manager._scheduler, manager._heartbeat, *manager._watchers]:
        if task is not None:
            task.cancel()


def _kinds(store: TrainingStore, job_id: str) -> list[str]:
    return [e.kind for e in store.events_after(job_id, 0)]


async def test_two_replicas_claim_each_job_once(world):
    _, _, store, host, publisher = world
    a, b = _manager(world, "a", workers=2), _manager(world, "b", workers=2)
    jobs = [_job(store) for _ in range(4)]
    await a.start()
    await b.start()
    try:
        await until(lambda: len(host.starts) == 4)
        await asyncio.sleep(0.3)  # more scheduling rounds: still nobody starts one twice
        assert sorted(host.starts) == sorted((job, 1) for job in jobs)
        owners = {store.find_job(job).owner for job in jobs}
        assert owners <= {"a", "b"}
        for worker in list(host.workers.values()):
            worker.run_steps(1, 2)
            worker.succeed()
        await until(lambda: all(store.find_job(j).state == "succeeded" for j in jobs))
        assert sorted(job for _, job in publisher.pushed) == sorted(jobs)
        for job in jobs:
            assert _kinds(store, job).count("published") == 1
    finally:
        await a.close()
        await b.close()


async def test_a_dead_replicas_job_is_taken_over_with_its_worker_once_the_lease_lapses(world):
    _, _, store, host, publisher = world
    a = _manager(world, "a")
    job = _job(store)
    await a.start()
    await until(lambda: host.starts)
    worker = host.workers[(job, 1)]
    worker.emit("started", total_steps=6, resumed_from_step=0, trainable_parameters=1)
    worker.run_steps(1, 2)
    await until(lambda: store.find_job(job).step == 2)
    _die(a)
    worker.run_steps(3, 4)  # written while no service watches
    lapses = store.find_job(job).lease_expires_at

    b = _manager(world, "b")
    await b.start()
    try:
        await until(lambda: store.find_job(job).owner == "b")
        taken = store.find_job(job)
        assert taken.lease_expires_at - 0.6 >= lapses  # not before a's lease lapsed
        await until(lambda: store.find_job(job).step == 4)  # the steps written meanwhile
        worker.run_steps(5, 6)
        worker.succeed()
        await until(lambda: store.find_job(job).state == "succeeded")
    finally:
        await b.close()
    assert host.starts == [(job, 1)]  # reattached: never a second worker
    kinds = _kinds(store, job)
    assert kinds.count("started") == 1 and kinds.count("published") == 1
    steps = [e.payload["step"] for e in store.events_after(job, 0) if e.kind == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert publisher.pushed == [("acme/colors", job)]


async def test_a_restarted_replica_takes_its_own_job_back_at_once(world):
    _, _, store, host, _ = world
    a = _manager(world, "a", lease=60)
    job = _job(store)
    await a.start()
    await until(lambda: host.starts)
    host.workers[(job, 1)].run_steps(1, 3)
    await until(lambda: store.find_job(job).step == 3)
    _die(a)
    host.workers[(job, 1)].run_steps(4, 4)  # then the worker died with it, unrecorded
    host.workers[(job, 1)].kill()

    again = _manager(world, "a", lease=60)
    await again.start()  # long before the 60 s lease lapses
    try:
        assert host.starts == [(job, 1), (job, 2)]  # resumed under a new attempt
        steps = [e.payload["step"] for e in store.events_after(job, 0) if e.kind == "step"]
        assert steps == [1, 2, 3, 4]  # the dead worker's last events reached the history
        assert store.find_job(job).attempts == 2
        # Another replica leaves a held job alone.
        other = _manager(world, "b", lease=60)
        await other.start()
        await asyncio.sleep(0.3)
        assert store.find_job(job).owner == "a" and len(host.starts) == 2
        await other.close()
    finally:
        await again.close()


async def test_a_version_pushed_before_a_crash_is_not_pushed_again(world):
    _, _, store, host, publisher = world
    job = _job(store)
    publisher.pushed.append(("acme/colors", job))  # an earlier owner pushed, then died
    a = _manager(world, "a")
    await a.start()
    try:
        await until(lambda: host.starts)
        host.workers[(job, 1)].succeed()
        await until(lambda: store.find_job(job).state == "succeeded")
    finally:
        await a.close()
    assert publisher.pushed == [("acme/colors", job)]
    assert store.find_job(job).adapter_ref == "acme/colors@1"
    assert _kinds(store, job).count("published") == 1


async def test_a_stale_owner_writes_nothing(world):
    _, _, store, _, _ = world
    job = _job(store)
    ((_, first),) = store.claim_jobs("a", 0.2, 1)
    await asyncio.sleep(0.3)
    ((_, second),) = store.claim_jobs("b", 30, 1)
    with pytest.raises(LeaseLost):
        store.update_job(job, first, step=99)
    with pytest.raises(LeaseLost):
        store.append_event(job, "step", {"step": 99}, first)
    assert not store.finish_job(job, "succeeded", first)
    store.update_job(job, second, step=1)
    assert store.find_job(job).step == 1 and store.find_job(job).state == "running"


async def test_a_clean_shutdown_hands_the_job_back_at_once(world):
    _, _, store, host, _ = world
    a = _manager(world, "a", lease=60)
    job = _job(store)
    await a.start()
    await until(lambda: host.starts)
    await a.close()  # the worker checkpoints and stops: queued again, lease released
    record = store.find_job(job)
    assert record.state == "queued" and record.owner == "" and record.lease_expires_at is None
    b = _manager(world, "b", lease=60)
    await b.start()
    try:
        await until(lambda: len(host.starts) == 2)
        assert host.starts[-1] == (job, 2) and store.find_job(job).owner == "b"
    finally:
        await b.close()


async def test_a_worker_that_cannot_start_fails_the_job_with_a_reason(world):
    _, _, store, host, _ = world
    host.refuse = True
    a = _manager(world, "a")
    job = _job(store)
    await a.start()
    try:
        await until(lambda: store.find_job(job).state == "failed")
    finally:
        await a.close()
    record = store.find_job(job)
    assert "could not start the worker (RuntimeError)" in record.failure_reason
    assert a._leases == {}  # nothing left to heartbeat
