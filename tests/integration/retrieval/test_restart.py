"""Every acknowledged write survives `kill -9` of a real `python -m services.retrieval`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from services.common.probes import free_port
from services.common.testing import TEST_TENANT_KEYS
from services.retrieval.app import SERVICE_NAME
from tests.integration.retrieval.helpers import ACME, create, doc, search, stats, upsert

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def _start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LORAPLEX_DATA_DIR": str(data_dir),
        "LORAPLEX_API_KEYS": f"acme:{TEST_TENANT_KEYS['acme']}",
        "LORAPLEX_RETRIEVAL_PORT": str(port),
        "LORAPLEX_RETRIEVAL_METRICS_PORT": "0",
        "LORAPLEX_RETRIEVAL_SNAPSHOT_EVERY_WRITES": "3",
        "LORAPLEX_RETRIEVAL_EXECUTOR_THREADS": "2",
        "LORAPLEX_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.retrieval"], cwd=ROOT, env=env, stderr=subprocess.PIPE
    )


async def _wait_ready(channel: grpc.aio.Channel, proc: subprocess.Popen[bytes]) -> None:
    """Polls readiness (the service name, not liveness) until indexes are loaded."""
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(240):
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1
            )
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.25)
    raise AssertionError("server never became ready")


def _snapshots(data_dir: Path) -> list[Path]:
    """Snapshot objects in the default (local files) blob store: collections/<pk>/<rev>.npz."""
    root = data_dir / "retrieval" / "snapshots" / "objects" / "collections"
    return sorted(root.glob("*/*.npz"))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.stderr:
        proc.stderr.close()


async def test_acknowledged_writes_survive_sigkill_and_restart(tmp_path):
    port = free_port()
    target = f"127.0.0.1:{port}"
    proc = _start(tmp_path, port)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            await _wait_ready(channel, proc)
            stub = pb_grpc.RetrievalServiceStub(channel)
            for name, kind in (("flat", pb.INDEX_KIND_EXACT), ("graph", pb.INDEX_KIND_HNSW)):
                await create(stub, name, index_kind=kind)
                for i in range(8):  # eight acknowledged writes: a snapshot every three
                    text = f"Incident {i}: the boiler in building {i} lost pressure."
                    acked = await upsert(stub, name, [[doc(f"inc-{i}", text, n=str(i))]])
                    assert acked[-1].done and acked[-1].documents_written == 1
                await stub.DeleteDocuments(
                    pb.DeleteDocumentsRequest(collection=name, document_ids=["inc-0", "inc-1"]),
                    metadata=ACME,
                )
                last = await upsert(
                    stub, name, [[doc("inc-2", "Incident 2 resolved: the elevator was fixed.")]]
                )
                assert last[-1].revision == 10
        _kill(proc)  # no graceful shutdown, so no final snapshot

        snapshots = _snapshots(tmp_path)
        assert len(snapshots) == 2  # one per collection, the superseded ones deleted
        for path in snapshots:
            with np.load(path) as data:
                assert 0 < int(data["header"][0]) < 10  # the restart must replay the rest

        proc = _start(tmp_path, port)
        async with grpc.aio.insecure_channel(target) as channel:
            await _wait_ready(channel, proc)
            stub = pb_grpc.RetrievalServiceStub(channel)
            for name in ("flat", "graph"):
                numbers = await stats(stub, name)
                assert (numbers.documents, numbers.chunks, numbers.revision) == (6, 6, 10)
                hits = await search(stub, name, "boiler lost pressure", top_k=10)
                assert sorted(c.document_id for c in hits.chunks) == sorted(
                    f"inc-{i}" for i in range(2, 8)
                )
                fixed = await search(stub, name, "elevator fixed", top_k=1)
                assert fixed.chunks[0].document_id == "inc-2"
                assert "elevator" in fixed.chunks[0].text
                assert all("boiler in building 2" not in c.text for c in hits.chunks)
                assert fixed.revision == 10
        # A graceful stop snapshots what start-up replayed, so the next start replays nothing.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        snapshots = _snapshots(tmp_path)
        assert len(snapshots) == 2
        for path in snapshots:
            with np.load(path) as data:
                assert int(data["header"][0]) == 10 == int(path.stem)
    finally:
        if proc.poll() is None:
            _kill(proc)
