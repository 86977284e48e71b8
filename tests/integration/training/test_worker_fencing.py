"""kill -9 of a real `python -m services.training` and of its worker, then a restart.

The restarted replica (same port, so the same replica id) takes its job back at once,
without waiting for the lease to lapse; the step and checkpoint events the old worker
wrote to its events file before it died reach the job's history (once each), and the
job resumes from its last checkpoint under a new attempt. The lease files fence the
workers: an attempt that lost its lease writes nothing (unit-tested below).
"""

from __future__ import annotations

import json
import os
import signal

import grpc
import pytest
from sqlalchemy import select

from loraplex.training.v1 import training_service_pb2 as pb
from services.common.db import make_engine, sqlite_url
from services.common.probes import free_port
from services.training.fencing import Lease, grant_lease
from services.training.store import jobs_table
from services.training.worker import EventWriter
from tests.integration.training import replicas
from tests.integration.training.conftest import ACME, collect_events, stub, toy_spec, upload
from tests.processes import alive
from tests.unit.training.tiny_model import toy_rows

pytestmark = pytest.mark.integration


async def test_restarted_replica_logs_the_dead_workers_events_and_resumes(tmp_path, models_dir):
    port = free_port()
    jobs_root = tmp_path / "training" / "jobs"
    service = replicas.start(tmp_path, models_dir, port)
    with replicas.reaping_workers(jobs_root):
        try:
            await replicas.serving(port, service)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                dataset = await upload(channel, toy_rows(4), "colors")
                spec = toy_spec(dataset.id, max_steps=40, checkpoint_interval_steps=5)
                request = pb.CreateJobRequest(spec=spec)
                job = (await stub(channel).CreateJob(request, metadata=ACME)).job
            job_dir = jobs_root / job.id
            await replicas.until(lambda: 7 in replicas.file_steps(job_dir, 1))  # checkpointed
            worker = replicas.worker_pid(job_dir)
            service.send_signal(signal.SIGKILL)
            os.kill(worker, signal.SIGKILL)  # the container went down with both
            service.wait(timeout=30)
            await replicas.until(lambda: not alive(worker))
            engine = make_engine(sqlite_url(tmp_path / "training" / "training.db"))
            with engine.connect() as conn:
                lapses = conn.execute(
                    select(jobs_table.c.lease_expires_at).where(jobs_table.c.id == job.id)
                ).scalar_one()
            written = replicas.file_steps(job_dir, 1)

            service = replicas.start(tmp_path, models_dir, port)
            await replicas.serving(port, service)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                events = await collect_events(channel, job.id, deadline=600)
                final = await stub(channel).GetJob(pb.GetJobRequest(id=job.id), metadata=ACME)
            with engine.connect() as conn:
                taken = conn.execute(
                    select(jobs_table.c.lease_epoch).where(jobs_table.c.id == job.id)
                ).scalar_one()
            engine.dispose()

            kinds = replicas.kinds(events)
            assert kinds[-1] == "succeeded", kinds[-5:]
            first, second = replicas.runs(events)
            assert first == written  # every step the dead worker wrote, once
            checkpoints = [
                e.checkpoint.step for e in events if e.WhichOneof("event") == "checkpoint"
            ]
            starts = [e.started for e in events if e.WhichOneof("event") == "started"]
            assert starts[1].resumed_from_step in checkpoints and second[-1] == 40
            assert final.job.attempts == 2 and final.job.step == 40
            assert taken >= 2 and lapses is not None
        finally:
            replicas.stop(service)


def test_a_worker_whose_attempt_lost_the_lease_writes_nothing(tmp_path):
    grant_lease(tmp_path, 1)
    writer = EventWriter(tmp_path / "events.jsonl", Lease(tmp_path, 1))
    writer("step", step=1)
    grant_lease(tmp_path, 2)  # the next attempt took the job folder over
    writer("step", step=2)
    writer.close()
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(x["step"], x["attempt"]) for x in lines] == [(1, 1)]
