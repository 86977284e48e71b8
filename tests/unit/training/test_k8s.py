"""The Kubernetes Job manifest, checked without a cluster; the client is optional."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from services.common.errors import FailedPrecondition
from services.training.k8s import KubernetesExecutor, build_job_manifest, k8s_name


def test_manifest_runs_the_worker_on_the_shared_volume():
    manifest = build_job_manifest(
        "job-ABC_123",
        2,
        "training/jobs/job-ABC_123",
        namespace="ml",
        image="reg/loraplex-training:1",
        data_pvc="data",
        gpus=1,
    )
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    assert manifest["metadata"]["name"] == "loraplex-train-job-abc-123-2"
    assert manifest["metadata"]["namespace"] == "ml"
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "services.training.worker"]
    assert container["args"][:4] == [
        "--job-dir",
        "/data/training/jobs/job-ABC_123",
        "--data-root",
        "/data",
    ]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "data"
    assert container["securityContext"]["runAsNonRoot"] is True


def test_names_are_dns_safe_and_short():
    name = k8s_name("job-" + "x" * 80, 1)
    assert len(name) <= 63 and not name.endswith("-")


@pytest.mark.skipif(importlib.util.find_spec("kubernetes") is not None, reason="client installed")
def test_missing_client_is_a_failed_precondition(tmp_path):
    with pytest.raises(FailedPrecondition) as err:
        KubernetesExecutor(tmp_path, "ml", "img", "pvc")
    assert "executor=local" in err.value.message


class FakeBatchApi:
    """The slice of `BatchV1Api` the executor calls, over a dict: no cluster runs here."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], SimpleNamespace] = {}

    def create_namespaced_job(self, namespace, manifest):
        meta = manifest["metadata"]
        self.jobs[(namespace, meta["name"])] = SimpleNamespace(
            metadata=SimpleNamespace(
                name=meta["name"], labels=dict(meta["labels"]), deletion_timestamp=None
            ),
            status=SimpleNamespace(active=1, succeeded=None, failed=None),
        )

    def list_namespaced_job(self, namespace, label_selector=""):
        wanted = dict(pair.split("=", 1) for pair in label_selector.split(",") if pair)
        items = [
            job
            for (ns, _), job in self.jobs.items()
            if ns == namespace and wanted.items() <= job.metadata.labels.items()
        ]
        return SimpleNamespace(items=items)

    def read_namespaced_job_status(self, name, namespace):
        return self.jobs[(namespace, name)]

    def delete_namespaced_job(self, name, namespace, **_):
        self.jobs[(namespace, name)].metadata.deletion_timestamp = "now"


async def test_a_restarted_replica_reattaches_to_its_kubernetes_job_by_label(tmp_path):
    api = FakeBatchApi()
    job_dir = tmp_path / "training" / "jobs" / "job-1"
    first = KubernetesExecutor(tmp_path, "ml", "img", "pvc", api=api)
    await first.start("job-1", job_dir, 2)
    await first.start("job-2", tmp_path / "training" / "jobs" / "job-2", 1)

    # Another replica (or this one restarted) finds the job's Job by its labels.
    second = KubernetesExecutor(tmp_path, "ml", "img", "pvc", api=api)
    handle = await second.attach("job-1", job_dir, 2)
    assert handle is not None and handle.name == k8s_name("job-1", 2)
    assert await second.attach("job-1", job_dir, 1) is None  # an older attempt: not it
    assert (
        await KubernetesExecutor(tmp_path, "other", "i", "p", api=api).attach("job-1", job_dir, 2)
        is None
    )  # another namespace

    api.jobs[("ml", handle.name)].status.succeeded = 1
    assert await handle.wait() == 0

    handle.kill()  # deleted: a Job on its way out is not reattached
    assert await second.attach("job-1", job_dir, 2) is None
