"""The Kubernetes Job manifest, checked without a cluster; the client is optional."""

from __future__ import annotations

import importlib.util

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
