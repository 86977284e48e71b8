"""The four CPU images as containers, run the way the dev overlay's pods run them.

What a pod gets, read from the manifests where they say it: the suite settings
(`overlays/dev/suite.env`, the ConfigMap), each container's own `env` (keys file,
service keys from `overlays/dev/dev-keys`, the Secret), its user and read-only root
(`securityContext`), its memory limit (`overlays/dev/resources.yaml`) and its probes.
Volumes follow the manifests too: a data directory each on /data, training's
`models/` read-only on inference's /data/models, the keys folder read-only, an
exec-able tmpfs on /tmp (an emptyDir) and /dev/shm sized like the memory emptyDirs.
Host networking with every address rewritten to 127.0.0.1, so no traffic leaves
loopback and no bridge network is needed.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml

from services.common.probes import free_port, wait_until_serving
from services.suite import DEV_ENV_FILE, ROOT, SERVICES, read_env_file

BASE = ROOT / "deploy" / "kustomize" / "base"
DEV = ROOT / "deploy" / "kustomize" / "overlays" / "dev"
DEFAULT_PORTS = {"registry": 50051, "retrieval": 50052, "training": 50053, "inference": 50054}
TMP_SIZE = {"registry": "1g", "retrieval": "1g", "training": "4g", "inference": "4g"}
_IN_CLUSTER = re.compile(r"\b(registry|retrieval|training|inference)(?:\.[a-z0-9.-]+)?:\d+\b")


def docker(*args: str, check: bool = True, timeout: float = 600) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}…: {result.stderr.strip()[-2000:]}")
    return result.stdout


def images_missing(images: dict[str, str]) -> list[str]:
    return [
        image
        for image in images.values()
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
    ]


@dataclass(frozen=True)
class PodSpec:
    """What one service's manifest says about its container."""

    user: int
    read_only_root: bool
    env: dict[str, str]
    memory_limit: str
    probes: dict[str, tuple[int, str]]  # startupProbe/readinessProbe/livenessProbe → port, service


def _workload(service: str) -> dict:
    for doc in yaml.safe_load_all((BASE / f"{service}.yaml").read_text()):
        if doc and doc["kind"] in ("Deployment", "StatefulSet"):
            return doc
    raise LookupError(f"no workload in {service}.yaml")


def _dev_memory_limits() -> dict[str, str]:
    limits = {}
    for doc in yaml.safe_load_all((DEV / "resources.yaml").read_text()):
        container = doc["spec"]["template"]["spec"]["containers"][0]
        limits[container["name"]] = container["resources"]["limits"]["memory"]
    return limits


def pod_spec(service: str) -> PodSpec:
    pod = _workload(service)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:  # the dev overlay's Secret is generated from dev-keys/
            key = item["valueFrom"]["secretKeyRef"]["key"]
            env[item["name"]] = (DEV / "dev-keys" / key).read_text().strip()
    probes = {
        kind: (container[kind]["grpc"]["port"], container[kind]["grpc"].get("service", ""))
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
        if "grpc" in container.get(kind, {})
    }
    memory = _dev_memory_limits()[service].replace("Mi", "m").replace("Gi", "g")
    return PodSpec(
        user=security["runAsUser"],
        read_only_root=security.get("readOnlyRootFilesystem", False),
        env=env,
        memory_limit=memory,
        probes=probes,
    )


def health_status(address: str, service: str) -> str:
    """The kubelet's gRPC probe: grpc.health.v1.Health/Check for `service`."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _give_to(path: Path, uid: int) -> None:
    """Volumes belong to the pods' user (fsGroup does that in Kubernetes)."""
    try:
        os.chown(path, uid, uid)
    except PermissionError:
        path.chmod(0o777)


class ContainerSuite:
    """Starts, SIGKILLs and restarts the service containers; `env` is what the CLI needs."""

    def __init__(self, root: Path, images: dict[str, str]) -> None:
        self.root = root.resolve()
        self.images = images
        self.prefix = f"loraplex-e2e-{secrets.token_hex(3)}"
        self.ports = {s: free_port() for s in SERVICES}
        self.metrics_ports = {s: free_port() for s in SERVICES}
        self.specs = {s: pod_spec(s) for s in SERVICES}
        self.keys_dir = self.root / "keys"
        self.keys_file = self.keys_dir / "keys.json"
        self.started: list[str] = []
        self.keys_dir.mkdir(parents=True)
        shutil.copy(DEV / "dev-keys" / "keys.json", self.keys_file)
        for service in SERVICES:
            self.data(service).mkdir(parents=True)
            _give_to(self.data(service), self.specs[service].user)
        self.allow_keys()
        self.env = {f"LORAPLEX_{s.upper()}_ADDR": self.address(s) for s in SERVICES}
        self.env["LORAPLEX_KEYS_FILE"] = str(self.keys_file)

    def data(self, service: str) -> Path:
        return self.root / service

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def name(self, service: str) -> str:
        return f"{self.prefix}-{service}"

    def allow_keys(self) -> None:
        """The keys file as the Secret mounts it: readable by the pods' user, read-only."""
        for path in (self.keys_dir, self.keys_file):
            _give_to(path, self.specs["registry"].user)

    def container_env(self, service: str) -> dict[str, str]:
        env = {
            k: _IN_CLUSTER.sub(lambda m: self.address(m.group(1)), v)
            for k, v in read_env_file(DEV_ENV_FILE).items()
        }
        for other in SERVICES:  # loopback only, on this run's free ports
            prefix = f"LORAPLEX_{other.upper()}_"
            env[f"{prefix}HOST"] = "127.0.0.1"
            env[f"{prefix}PORT"] = str(self.ports[other])
            env[f"{prefix}METRICS_PORT"] = str(self.metrics_ports[other])
        return {**env, **self.specs[service].env}

    def create(self, service: str) -> None:
        spec = self.specs[service]
        mounts = [f"{self.data(service)}:/data", f"{self.keys_dir}:/etc/loraplex/keys:ro"]
        if service == "inference":  # loraplex-data's models/ (subPath), read-only
            mounts.append(f"{self.data('training') / 'models'}:/data/models:ro")
        args = [
            "create",
            f"--name={self.name(service)}",
            "--network=host",
            f"--user={spec.user}:{spec.user}",
            f"--memory={spec.memory_limit}",
            f"--tmpfs=/tmp:rw,exec,mode=1777,size={TMP_SIZE[service]}",
            "--shm-size=2g",
            "--security-opt=no-new-privileges",
            "--cap-drop=ALL",
        ]
        if spec.read_only_root:
            args.append("--read-only")
        for mount in mounts:
            args += ["-v", mount]
        for key, value in self.container_env(service).items():
            args += ["-e", f"{key}={value}"]
        docker(*args, self.images[service])
        self.started.append(service)

    def start(self, service: str, timeout: float = 900.0) -> None:
        """Starts (or restarts) the container and waits for its readiness probe."""
        if service not in self.started:
            self.create(service)
        docker("start", self.name(service))
        port, full_name = self.probe(service, "readinessProbe")
        try:
            wait_until_serving(f"127.0.0.1:{port}", full_name, timeout)
        except TimeoutError:
            tail = self.logs(service)
            raise RuntimeError(f"{service} not ready; its log ends:\n{tail}") from None

    def probe(self, service: str, kind: str) -> tuple[int, str]:
        """A probe of the manifest, its port mapped from the default to this run's."""
        port, name = self.specs[service].probes[kind]
        assert port == DEFAULT_PORTS[service], f"{service} {kind} probes port {port}"
        return self.ports[service], name

    def kill(self, service: str) -> int:
        """SIGKILL: nothing gets a chance to flush; returns the exit code docker saw."""
        docker("kill", "--signal=KILL", self.name(service))
        docker("wait", self.name(service))
        return int(docker("inspect", "-f", "{{.State.ExitCode}}", self.name(service)))

    def exec(self, service: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["docker", "exec", self.name(service), *command],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} in {service}:\n{result.stderr[-3000:]}")
        return result

    def logs(self, service: str, tail: int = 60) -> str:
        result = subprocess.run(
            ["docker", "logs", f"--tail={tail}", self.name(service)],
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout + result.stderr

    def remove_all(self) -> None:
        for service in self.started:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                docker("rm", "-f", self.name(service), timeout=120)
        self.started.clear()
