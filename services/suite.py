"""The four services as local OS processes: the embedded default, the demo and the e2e test.

Settings come from an env file (by default the dev overlay's `suite.env`, the same
values Kubernetes gets), with in-cluster addresses like `registry:50051` rewritten
to this machine's ports. Logs go to `<data_dir>/logs/<service>.log`.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from services.common.probes import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
DEV_ENV_FILE = ROOT / "deploy" / "kustomize" / "overlays" / "dev" / "suite.env"
SERVICES = ("registry", "retrieval", "training", "inference")
FULL_NAMES = {
    "registry": "loraplex.registry.v1.RegistryService",
    "retrieval": "loraplex.retrieval.v1.RetrievalService",
    "training": "loraplex.training.v1.TrainingService",
    "inference": "loraplex.inference.v1.InferenceService",
}
DEFAULT_PORTS = {"registry": 50051, "retrieval": 50052, "training": 50053, "inference": 50054}
_IN_CLUSTER = re.compile(r"\b(registry|retrieval|training|inference)(?:\.[a-z0-9.-]+)?:\d+\b")
#: Set here per process, whatever the file says: where things live on this machine.
_LOCAL_KEYS = ("HOST", "PORT", "METRICS_PORT")


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    return values


class LocalSuite:
    """Starts, kills and restarts the services; `env` is what every process gets."""

    def __init__(
        self,
        data_dir: Path,
        env_file: Path | None = DEV_ENV_FILE,
        overrides: dict[str, str] | None = None,
        free_ports: bool = True,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.ports = {s: free_port() if free_ports else DEFAULT_PORTS[s] for s in SERVICES}
        self.processes: dict[str, subprocess.Popen] = {}
        base = read_env_file(env_file) if env_file and env_file.exists() else {}
        service_keys = {
            s: "lpx_svc_" + secrets.token_urlsafe(24) for s in ("training", "inference")
        }
        cluster_data = base.get("LORAPLEX_DATA_DIR", "").rstrip("/")
        env = {k: self._localize(v, cluster_data) for k, v in base.items()}
        env.update(
            {
                "LORAPLEX_DATA_DIR": str(self.data_dir),
                "LORAPLEX_SERVICE_KEYS": ",".join(f"{s}:{k}" for s, k in service_keys.items()),
                "LORAPLEX_TRAINING_SERVICE_KEY": service_keys["training"],
                "LORAPLEX_INFERENCE_SERVICE_KEY": service_keys["inference"],
            }
        )
        for service, port in self.ports.items():
            prefix = f"LORAPLEX_{service.upper()}_"
            env.update({f"{prefix}HOST": "127.0.0.1", f"{prefix}PORT": str(port)})
            env[f"{prefix}METRICS_PORT"] = "0"
            env[f"{prefix}ADDR"] = self.address(service)  # what the CLI and SDK dial
        env.update(
            {
                "LORAPLEX_TRAINING_REGISTRY_ADDR": self.address("registry"),
                "LORAPLEX_INFERENCE_REGISTRY_ADDR": self.address("registry"),
                "LORAPLEX_INFERENCE_RETRIEVAL_ADDR": self.address("retrieval"),
            }
        )
        env.pop("LORAPLEX_KEYS_FILE", None)  # the keys file lives in the local data dir
        env.update(overrides or {})
        self.env = env

    def _localize(self, value: str, cluster_data: str) -> str:
        """In-cluster addresses → local ports; paths under the pod's data dir → ours."""
        if cluster_data and (value == cluster_data or value.startswith(f"{cluster_data}/")):
            value = str(self.data_dir) + value[len(cluster_data) :]
        return _IN_CLUSTER.sub(lambda m: self.address(m.group(1)), value)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def start(self, service: str, timeout: float = 180.0) -> None:
        self.launch(service)
        self.wait_ready(service, timeout)

    def launch(self, service: str) -> None:
        """Starts the process without waiting: other work can overlap a slow start."""
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_file = (logs / f"{service}.log").open("ab")
        self.processes[service] = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log_file.close()

    def wait_ready(self, service: str, timeout: float = 180.0) -> None:
        try:
            wait_until_serving(
                self.address(service), FULL_NAMES[service], timeout, self.processes[service]
            )
        except (TimeoutError, RuntimeError):
            tail = (self.data_dir / "logs" / f"{service}.log").read_text()[-3000:]
            self.stop(service)
            raise RuntimeError(f"{service} did not become ready; its log ends:\n{tail}") from None

    def kill(self, service: str) -> None:
        """SIGKILL: no chance to flush anything that was not already durable."""
        process = self.processes.pop(service)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self, service: str, timeout: float = 60.0) -> None:
        process = self.processes.pop(service, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)

    def start_all(self, services: tuple[str, ...] = SERVICES) -> None:
        for service in services:
            self.start(service)

    def stop_all(self) -> None:
        for service in reversed(list(self.processes)):
            self.stop(service)

    def __enter__(self) -> LocalSuite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
