"""Kubernetes executor: each training job becomes a Kubernetes Job running the worker.

The manifest is a plain dict so it can be tested without a cluster; the official
`kubernetes` client is imported only when this executor is chosen. Jobs carry the
training job's id and attempt as labels, so any replica that takes the training job
over finds its Kubernetes Job and reattaches instead of starting another.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition

log = logging.getLogger(__name__)

DATA_MOUNT = "/data"


def k8s_name(job_id: str, attempt: int) -> str:
    """DNS-1123 name: lower-case alphanumerics and '-', at most 63 characters."""
    name = re.sub(r"[^a-z0-9-]", "-", f"loraplex-train-{job_id}-{attempt}".lower())
    return name[:63].rstrip("-")


def job_labels(job_id: str, attempt: int) -> dict[str, str]:
    """What finds a training job's Kubernetes Job again (job ids are valid label values)."""
    return {
        "app.kubernetes.io/name": "loraplex-training-job",
        "loraplex.io/job-id": job_id,
        "loraplex.io/attempt": str(attempt),
    }


def build_job_manifest(
    job_id: str,
    attempt: int,
    job_dir_in_data: str,
    *,
    namespace: str,
    image: str,
    data_pvc: str,
    cpu: str = "4",
    memory: str = "16Gi",
    gpus: int = 0,
) -> dict[str, Any]:
    """A batch/v1 Job that runs the worker on the job folder of the shared data volume."""
    limits: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    labels = job_labels(job_id, attempt)
    container = {
        "name": "trainer",
        "image": image,
        "command": ["python", "-m", "services.training.worker"],
        "args": [
            "--job-dir",
            f"{DATA_MOUNT}/{job_dir_in_data}",
            "--data-root",
            DATA_MOUNT,
        ],
        "env": [{"name": "TOKENIZERS_PARALLELISM", "value": "false"}],
        "resources": {"requests": dict(limits), "limits": limits},
        "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT}],
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": k8s_name(job_id, attempt), "namespace": namespace, "labels": labels},
        "spec": {
            # The service decides about retries (resume from checkpoint), not Kubernetes.
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": data_pvc}}],
                },
            },
        },
    }


def load_client() -> Any:
    try:
        import kubernetes  # type: ignore[import-not-found]
    except ImportError:
        raise FailedPrecondition(
            "the kubernetes executor needs the 'kubernetes' Python client, which is not"
            " installed on this training service; install it or set executor=local"
        ) from None
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes


class KubernetesHandle:
    """Polls the Job's status; terminate/kill delete it (pods get SIGTERM, then SIGKILL)."""

    def __init__(self, api: Any, name: str, namespace: str, poll_seconds: float = 5.0) -> None:
        self.api = api
        self.name = name
        self.namespace = namespace
        self.poll_seconds = poll_seconds

    async def wait(self) -> int:
        while True:
            job = await asyncio.to_thread(
                self.api.read_namespaced_job_status, self.name, self.namespace
            )
            status = job.status
            if status.succeeded:
                return 0
            if status.failed:
                return 1
            await asyncio.sleep(self.poll_seconds)

    def _delete(self, grace: int) -> None:
        self.api.delete_namespaced_job(
            self.name,
            self.namespace,
            grace_period_seconds=grace,
            propagation_policy="Foreground",
        )

    def terminate(self) -> None:
        self._delete(30)

    def kill(self) -> None:
        self._delete(0)


class KubernetesExecutor:
    """Submits one Job per attempt; pods keep running when the service restarts.

    `api` is a `BatchV1Api` (or a stand-in in tests); by default the cluster's.
    """

    detached = True

    def __init__(
        self,
        data_root: Path,
        namespace: str,
        image: str,
        data_pvc: str,
        api: Any = None,
        **res: Any,
    ) -> None:
        self.api = api if api is not None else load_client().client.BatchV1Api()
        self.data_root = data_root
        self.namespace = namespace
        self.image = image
        self.data_pvc = data_pvc
        self.resources = res

    async def start(self, job_id: str, job_dir: Path, attempt: int) -> KubernetesHandle:
        relative = job_dir.relative_to(self.data_root).as_posix()
        manifest = build_job_manifest(
            job_id,
            attempt,
            relative,
            namespace=self.namespace,
            image=self.image,
            data_pvc=self.data_pvc,
            **self.resources,
        )
        await asyncio.to_thread(self.api.create_namespaced_job, self.namespace, manifest)
        name = manifest["metadata"]["name"]
        log.info("job %s: submitted Kubernetes Job %s", job_id, name)
        return KubernetesHandle(self.api, name, self.namespace)

    async def attach(self, job_id: str, job_dir: Path, attempt: int) -> KubernetesHandle | None:
        """The Kubernetes Job of `attempt`, found by label, running or ended; None if gone."""
        selector = ",".join(f"{k}={v}" for k, v in job_labels(job_id, attempt).items())
        found = await asyncio.to_thread(
            self.api.list_namespaced_job, self.namespace, label_selector=selector
        )
        for item in found.items:
            if item.metadata.deletion_timestamp is None:
                log.info("job %s: reattached to Kubernetes Job %s", job_id, item.metadata.name)
                return KubernetesHandle(self.api, item.metadata.name, self.namespace)
        return None
