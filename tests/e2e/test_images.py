"""The suite run from its CPU images, the way the dev overlay's pods run them.

`make test-images` builds the images (`make images`) and runs this; elsewhere it is
skipped with the reason. Containers: read-only root, uid 10001, tmpfs /tmp, a data
volume each, the dev overlay's settings, host networking on loopback ports
(tests/e2e/containers.py). The main flow runs through the CLI on the host: keys,
the real base model (SmolLM2-135M-Instruct, imported by `loraplex models import`
inside the training container), ingest, training through the training container,
publish, alias, ask with adapter + RAG. Retrieval, registry and training are
SIGKILLed and restarted; nothing they acknowledged is lost. Every container answers
the gRPC health checks its Kubernetes probes make.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.suite import SERVICES
from tests.e2e.containers import ContainerSuite, health_status, images_missing
from tests.e2e.test_local_suite import HANDBOOK, User

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TAG = os.environ.get("LORAPLEX_IMAGE_TAG", "0.1.0")
IMAGES = {s: f"loraplex/{s}:{TAG}" for s in SERVICES}
MODEL = "smollm2-135m-instruct"  # the dev overlay's LORAPLEX_INFERENCE_MODEL


def _skip_reason() -> str | None:
    if os.environ.get("LORAPLEX_TEST_IMAGES") != "1":
        return "runs from the built images: `make images && make test-images`"
    if shutil.which("docker") is None:
        return "no docker CLI on this machine"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine answers `docker info`"
    missing = images_missing(IMAGES)
    if missing:
        return f"images not built ({', '.join(missing)}): run `make images`"
    return None


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerSuite]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    containers = ContainerSuite(tmp_path_factory.mktemp("containers"), IMAGES)
    try:
        yield containers
    finally:
        for service in containers.started:
            print(f"--- {service} log (tail)\n{containers.logs(service, 40)}")
        containers.remove_all()


def test_suite_from_images(suite: ContainerSuite, tmp_path: Path) -> None:
    user = User(suite.env)
    key = user.run("keys", "create", "--tenant", "acme").stdout.strip().splitlines()[-1]
    suite.allow_keys()
    user.env["LORAPLEX_API_KEY"] = key

    for service in ("registry", "retrieval", "training"):
        suite.start(service)
    # As pods run: the service user, and nothing on the root file system is writable.
    assert suite.exec("registry", "id", "-u").stdout.strip() == "10001"
    denied = suite.exec("registry", "touch", "/opt/venv/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    # The base model goes into the shared data volume from the training image (README).
    imported = suite.exec("training", "loraplex", "models", "import").stdout
    assert f"imported {MODEL}" in imported, imported
    suite.start("inference")

    docs = tmp_path / "handbook"
    docs.mkdir()
    for name, text in HANDBOOK.items():
        (docs / name).write_text(text)
    user.run("docs", "create", "handbook")
    user.run("docs", "ingest", "handbook", str(docs))
    assert suite.kill("retrieval") == 137
    suite.start("retrieval")
    found = user.run("docs", "search", "handbook", "who approves trips abroad", "--json")
    assert "Regional Director" in found.stdout
    assert re.search(r"\b3\b", user.run("docs", "stats", "handbook").stdout)

    rows = [
        {"prompt": f"question: {q}", "completion": a}
        for q, a in [("who approves travel?", "the regional director")] * 8
        + [("refund window?", "45 days")] * 8
    ]
    dataset = tmp_path / "train.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset_id = user.run("data", "push", str(dataset)).stdout.split()[0]
    job_id = user.run(
        "train", "start", MODEL, "--dataset", dataset_id, "--max-steps", "3",
        "--batch-size", "2", "--max-seq-length", "64", "--publish", "acme/support",
        "--promote-alias", "prod",
    ).stdout.split()[0]  # fmt: skip
    user.run("train", "logs", "-f", job_id)
    assert "published acme/support@1" in user.run("train", "status", job_id).stdout

    assert suite.kill("registry") == 137
    suite.start("registry")
    shown = json.loads(user.run("registry", "show", "acme/support@prod").stdout)
    assert shown["ref"] == "acme/support@1" and "dataset_sha256" in shown["lineage"]
    assert suite.kill("training") == 137
    suite.start("training")
    assert "published acme/support@1" in user.run("train", "status", job_id).stdout

    answer = user.run(
        "ask", "Who approves trips abroad?", "--adapter", "acme/support@prod",
        "--collection", "handbook", "--top-k", "2", "--max-tokens", "12",
    ).stdout  # fmt: skip
    assert "acme/support@1" in answer and "sources" in answer and "Travel" in answer

    # A key added while everything runs works at once; that tenant sees none of acme's things.
    other = user.run("keys", "create", "--tenant", "globex").stdout.strip().splitlines()[-1]
    suite.allow_keys()
    user.env["LORAPLEX_API_KEY"] = other
    assert user.run("registry", "show", "acme/support", ok=False).returncode == 4
    assert user.run("docs", "search", "handbook", "travel", ok=False).returncode == 4

    for service in SERVICES:  # what the kubelet asks: startup, readiness, liveness
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            port, name = suite.probe(service, kind)
            assert health_status(f"127.0.0.1:{port}", name) == "SERVING", (service, kind)
