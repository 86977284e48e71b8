"""Two training replicas on one real PostgreSQL, publishing to a real registry.

Each job is claimed by one replica and runs once; when a replica is killed with
SIGKILL, the other takes its job over only once the lease has lapsed, reattaches to
the worker that kept running, logs what that worker wrote meanwhile, and publishes the
adapter exactly once.
"""

from __future__ import annotations

import signal

import grpc
import pytest
from sqlalchemy import select

from loraplex.training.v1 import training_service_pb2 as pb
from services.common.db import make_engine
from services.common.probes import free_port
from services.common.testing import running_server
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.training.store import jobs_table
from tests.integration.training import replicas
from tests.integration.training.conftest import ACME, collect_events, stub, toy_spec, upload
from tests.postgres import create_database, postgres_bin, postgres_server
from tests.processes import alive
from tests.unit.training.tiny_model import toy_rows

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(postgres_bin() is None, reason="no PostgreSQL server installed"),
]


@pytest.fixture(scope="module")
def server():
    with postgres_server() as url:
        yield url


@pytest.fixture
def database(server):
    url = create_database(server)
    engine = make_engine(url)
    yield url, engine
    engine.dispose()


def _lease(engine, job_id: str):
    with engine.connect() as conn:
        c = jobs_table.c
        return conn.execute(
            select(c.owner, c.lease_epoch, c.lease_expires_at, c.attempts).where(c.id == job_id)
        ).one()


def _publishing(spec: pb.JobSpec) -> pb.JobSpec:
    spec.publish.CopyFrom(pb.PublishConfig(adapter_name="acme/colors"))
    return spec


async def test_each_job_is_claimed_and_run_once(tmp_path, models_dir, database):
    url, engine = database
    data = tmp_path / "shared"
    registry_settings = RegistrySettings(data_dir=tmp_path / "registry")
    ports = [free_port(), free_port()]
    processes = []
    async with running_server(registry_settings, RegistryApp(registry_settings)) as registry:
        with replicas.reaping_workers(data / "training" / "jobs"):
            try:
                for port in ports:
                    processes.append(replicas.start(data, models_dir, port, url, registry.target))
                for port, process in zip(ports, processes, strict=True):
                    await replicas.serving(port, process)
                channels = [grpc.aio.insecure_channel(f"127.0.0.1:{p}") for p in ports]
                dataset = await upload(channels[0], toy_rows(4), "colors")
                jobs = []
                for channel in (channels[0], channels[1], channels[0]):
                    spec = _publishing(toy_spec(dataset.id, max_steps=4))
                    request = pb.CreateJobRequest(spec=spec)
                    jobs.append((await stub(channel).CreateJob(request, metadata=ACME)).job)
                for job in jobs:
                    events = await replicas_events(channels[1], job.id)
                    found = replicas.kinds(events)
                    assert found.count("started") == 1 and found[-1] == "succeeded", found
                    assert found.count("published") == 1
                    owner, _, _, attempts = _lease(engine, job.id)
                    assert attempts == 1 and owner in {replicas.replica_id(p) for p in ports}
                    assert await replicas.versions_of(registry.channel, "acme/colors", job.id)
                for channel in channels:
                    await channel.close()
            finally:
                for process in processes:
                    replicas.stop(process)
        versions = [
            await replicas.versions_of(registry.channel, "acme/colors", job.id) for job in jobs
        ]
        assert sorted(v for found in versions for v in found) == [1, 2, 3]


async def replicas_events(channel, job_id: str):
    return await collect_events(channel, job_id, deadline=600)


async def test_a_killed_replicas_job_is_taken_over_once_its_lease_lapses(
    tmp_path, models_dir, database
):
    url, engine = database
    data = tmp_path / "shared"
    registry_settings = RegistrySettings(data_dir=tmp_path / "registry")
    ports = [free_port(), free_port()]
    processes = {}
    async with running_server(registry_settings, RegistryApp(registry_settings)) as registry:
        with replicas.reaping_workers(data / "training" / "jobs"):
            try:
                for port in ports:
                    processes[port] = replicas.start(data, models_dir, port, url, registry.target)
                for port in ports:
                    await replicas.serving(port, processes[port])
                first = grpc.aio.insecure_channel(f"127.0.0.1:{ports[0]}")
                dataset = await upload(first, toy_rows(4), "colors")
                spec = _publishing(toy_spec(dataset.id, max_steps=40, checkpoint_interval_steps=5))
                request = pb.CreateJobRequest(spec=spec)
                job = (await stub(first).CreateJob(request, metadata=ACME)).job
                await first.close()
                lease = await replicas.until(
                    lambda: (found := _lease(engine, job.id)).attempts and found
                )
                owner = next(p for p in ports if replicas.replica_id(p) == lease.owner)
                other = next(p for p in ports if p != owner)
                job_dir = data / "training" / "jobs" / job.id
                await replicas.until(lambda: replicas.file_steps(job_dir, 1))
                worker = replicas.worker_pid(job_dir)

                processes[owner].send_signal(signal.SIGKILL)
                processes[owner].wait(timeout=30)
                lapsed = _lease(engine, job.id).lease_expires_at  # its last heartbeat's
                taken = await replicas.until(
                    lambda: (found := _lease(engine, job.id)).owner != lease.owner and found
                )
                # Taken over by the other replica, not before the dead one's lease lapsed.
                assert taken.owner == replicas.replica_id(other)
                assert taken.lease_expires_at - replicas.LEASE >= lapsed
                assert taken.attempts == 1  # the same worker, reattached: not a second run

                async with grpc.aio.insecure_channel(f"127.0.0.1:{other}") as channel:
                    events = await replicas_events(channel, job.id)
                found = replicas.kinds(events)
                assert found[-1] == "succeeded", found
                # Every step the worker wrote, also those while no service watched, once.
                assert replicas.runs(events) == [list(range(1, 41))]
                assert replicas.file_steps(job_dir, 1) == list(range(1, 41))
                assert found.count("published") == 1
                assert not alive(worker)
            finally:
                for process in processes.values():
                    replicas.stop(process)
        assert await replicas.versions_of(registry.channel, "acme/colors", job.id) == [1]
