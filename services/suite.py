"""The four services as local OS processes: the embedded default, the demo and the e2e tests.

Settings come from an env file (by default the dev overlay's `suite.env`, the same
values Kubernetes gets), with in-cluster addresses like `registry:50051` rewritten
to this machine's ports. Logs go to `<data_dir>/logs/<process>.log`.

Two shapes:
- embedded (`replicas=0`, the default; `make demo`, `suite up`): one process per service on
  SQLite and local files under the data root, exactly as a single node runs it;
- replicated (`replicas=N`): PostgreSQL (one database per service) and an S3-compatible
  object store (moto's in-memory emulator) as local processes, then N processes of every
  service on loopback. Replicas of a service share its database and bucket prefix; each has
  its own data folder, as each pod has its own volume; clients and services dial a static
  list of every replica (`127.0.0.1:p1,127.0.0.1:p2`). The cluster is throwaway:
  its database and objects start empty each time.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from services.common.probes import free_port, wait_until_http_ok, wait_until_serving
from services.suite_backends import (
    EMULATOR_KEY_ID,
    EMULATOR_REGION,
    EMULATOR_SECRET,
    LocalObjectStore,
    LocalPostgres,
)

ROOT = Path(__file__).resolve().parent.parent
DEV_ENV_FILE = ROOT / "deploy" / "kustomize" / "overlays" / "dev" / "suite.env"
SERVICES = ("registry", "retrieval", "training", "inference")
FULL_NAMES = {
    "registry": "loraplex.registry.v1.RegistryService",
    "retrieval": "loraplex.retrieval.v1.RetrievalService",
    "training": "loraplex.training.v1.TrainingService",
    "inference": "loraplex.inference.v1.InferenceService",
}
DEFAULT_PORTS = {
    "registry": 50051,
    "retrieval": 50052,
    "training": 50053,
    "inference": 50054,
    "gateway": 50055,
}
#: The OpenAI-shaped HTTP gateway (files, fine-tuning, vector stores, embeddings, and the
#: inference routes forwarded): one process, started by `loraplex suite up` beside the four.
GATEWAY = "gateway"
#: HTTP ports of the OpenAI front ends (inference serves its own routes; the gateway the rest).
OPENAI_PORTS = {"inference": 8054, "gateway": 8080}
#: Replica i of a service listens on its default port + i * REPLICA_PORT_STEP (fixed ports).
REPLICA_PORT_STEP = 100
#: Services with a database of their own on PostgreSQL when replicated.
DATABASES = ("registry", "retrieval", "training")
#: The object store's bucket; each service keeps its objects under its own prefix.
BUCKET = "loraplex"
#: Services whose artifacts go through the kit's BlobStore (adapter blobs, index snapshots).
BLOB_SERVICES = ("registry", "retrieval")
#: Replicated services that share one data folder (a ReadWriteMany volume in Kubernetes):
#: training's replicas hand datasets and job folders to each other's workers.
SHARED_DATA = ("training",)
_IN_CLUSTER = re.compile(r"\b(registry|retrieval|training|inference)(?:\.[a-z0-9.-]+)?:\d+\b")


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


def multi_target(addresses: list[str]) -> str:
    """Every replica as one address: the comma list the SDK and the services' channels turn
    into a static `ipv4:` gRPC target with round-robin (and adapter affinity for inference)."""
    return ",".join(addresses)


class LocalSuite:
    """Starts, kills and restarts the services; `env` is what clients (CLI, SDK) get."""

    def __init__(
        self,
        data_dir: Path,
        env_file: Path | None = DEV_ENV_FILE,
        overrides: dict[str, str] | None = None,
        free_ports: bool = True,
        replicas: int = 0,
    ) -> None:
        if replicas < 0:
            raise ValueError("replicas must be 0 (embedded) or more")
        self.data_dir = data_dir.resolve()
        self.replicas = replicas
        count = {s: max(replicas, 1) for s in SERVICES} | {GATEWAY: 1}
        self.ports = {
            s: [free_port() if free_ports else DEFAULT_PORTS[s] + i * REPLICA_PORT_STEP
                for i in range(n)]
            for s, n in count.items()
        }  # fmt: skip
        self.openai_ports = {
            s: [free_port() if free_ports else OPENAI_PORTS[s] + i * REPLICA_PORT_STEP
                for i in range(count[s])]
            for s in OPENAI_PORTS
        }  # fmt: skip
        self.metrics_ports = {
            s: [(free_port() if free_ports else p + 1000) if replicas else 0 for p in ports]
            for s, ports in self.ports.items()
        }
        self.processes: dict[str, subprocess.Popen] = {}
        logs = self.data_dir / "logs"
        self.postgres = LocalPostgres(DATABASES, logs / "postgres.log") if replicas else None
        self.object_store = LocalObjectStore(BUCKET, logs / "objects.log") if replicas else None
        base = read_env_file(env_file) if env_file and env_file.exists() else {}
        service_keys = {
            s: "lpx_svc_" + secrets.token_urlsafe(24) for s in ("training", "inference", GATEWAY)
        }
        cluster_data = base.get("LORAPLEX_DATA_DIR", "").rstrip("/")
        env = {k: self._localize(v, cluster_data) for k, v in base.items()}
        env.update(
            {
                "LORAPLEX_DATA_DIR": str(self.data_dir),
                "LORAPLEX_SERVICE_KEYS": ",".join(f"{s}:{k}" for s, k in service_keys.items()),
                "LORAPLEX_TRAINING_SERVICE_KEY": service_keys["training"],
                "LORAPLEX_INFERENCE_SERVICE_KEY": service_keys["inference"],
                "LORAPLEX_GATEWAY_SERVICE_KEY": service_keys[GATEWAY],
            }
        )
        for service in (*SERVICES, GATEWAY):
            prefix = f"LORAPLEX_{service.upper()}_"
            env.update({f"{prefix}HOST": "127.0.0.1", f"{prefix}METRICS_PORT": "0"})
            env[f"{prefix}PORT"] = str(self.ports[service][0])
            env[f"{prefix}ADDR"] = self.address(service)  # what the CLI and SDK dial
        env.update(
            {
                "LORAPLEX_TRAINING_REGISTRY_ADDR": self.address("registry"),
                "LORAPLEX_INFERENCE_REGISTRY_ADDR": self.address("registry"),
                "LORAPLEX_INFERENCE_RETRIEVAL_ADDR": self.address("retrieval"),
                "LORAPLEX_GATEWAY_TRAINING_ADDR": self.address("training"),
                "LORAPLEX_GATEWAY_RETRIEVAL_ADDR": self.address("retrieval"),
                # One address for every route: the gateway forwards the inference routes.
                "LORAPLEX_GATEWAY_INFERENCE_URL": self.http_url("inference"),
            }
        )
        env.pop("LORAPLEX_KEYS_FILE", None)  # the keys file lives in the local data dir
        if replicas:
            env.update(self._replicated_env())
        env.update(overrides or {})
        self.env = env

    def _localize(self, value: str, cluster_data: str) -> str:
        """In-cluster addresses → local ports; paths under the pod's data dir → ours."""
        if cluster_data and (value == cluster_data or value.startswith(f"{cluster_data}/")):
            value = str(self.data_dir) + value[len(cluster_data) :]
        return _IN_CLUSTER.sub(lambda m: self.address(m.group(1)), value)

    def _replicated_env(self) -> dict[str, str]:
        """Databases, object store and the shared files every replica needs to agree on."""
        assert self.postgres is not None and self.object_store is not None
        self.postgres.port = self.postgres.port or free_port()
        self.object_store.port = self.object_store.port or free_port()
        env = {
            # One keys file and one model store for the whole suite (a Secret and the
            # read-only models volume in Kubernetes).
            "LORAPLEX_KEYS_FILE": str(self.data_dir / "keys.json"),
            "LORAPLEX_TRAINING_MODELS_DIR": str(self.data_dir / "models"),
        }
        for service in DATABASES:
            env[f"LORAPLEX_{service.upper()}_DATABASE_URL"] = self.postgres.url(service)
        for service in BLOB_SERVICES:  # the kit's BlobStore settings, one prefix per service
            prefix = f"LORAPLEX_{service.upper()}_BLOB_"
            env[f"{prefix}URL"] = f"s3://{BUCKET}/{service}"
            env[f"{prefix}ENDPOINT_URL"] = self.object_store.endpoint
            env[f"{prefix}REGION"] = EMULATOR_REGION
            env[f"{prefix}ACCESS_KEY_ID"] = EMULATOR_KEY_ID
            env[f"{prefix}SECRET_ACCESS_KEY"] = EMULATOR_SECRET
            env[f"{prefix}ADDRESSING_STYLE"] = "path"
        return env

    # -- where things are ---------------------------------------------------------------

    def replica_address(self, service: str, replica: int = 0) -> str:
        return f"127.0.0.1:{self.ports[service][replica]}"

    def address(self, service: str) -> str:
        """The target that reaches every replica of `service`."""
        return multi_target(
            [self.replica_address(service, i) for i in range(len(self.ports[service]))]
        )

    def http_url(self, service: str, replica: int = 0) -> str:
        """Where a service's OpenAI-shaped HTTP front end listens (inference, gateway)."""
        return f"http://127.0.0.1:{self.openai_ports[service][replica]}"

    def openai_base_url(self) -> str:
        """The one base URL that serves every OpenAI route (the gateway's)."""
        return f"{self.http_url(GATEWAY)}/v1"

    def metrics_url(self, service: str, replica: int = 0) -> str:
        port = self.metrics_ports[service][replica]
        if not port:
            raise ValueError("metrics are served only by replicated suites")
        return f"http://127.0.0.1:{port}/metrics"

    def process_name(self, service: str, replica: int = 0) -> str:
        return f"{service}-{replica}" if self.replicas else service

    def replica_data_dir(self, service: str, replica: int = 0) -> Path:
        """The data root one process gets: the suite's own when embedded or shared."""
        if not self.replicas:
            return self.data_dir
        if service in SHARED_DATA:
            return self.data_dir / "cluster" / service
        return self.data_dir / "cluster" / "replicas" / self.process_name(service, replica)

    def _replicas(self, service: str, replica: int | None) -> list[int]:
        return list(range(len(self.ports[service]))) if replica is None else [replica]

    # -- the backing services -----------------------------------------------------------

    def start_backends(self) -> None:
        """PostgreSQL and the object store (replicated suites only), on fresh state."""
        if not self.replicas:
            return
        assert self.postgres is not None and self.object_store is not None
        shutil.rmtree(self.data_dir / "cluster", ignore_errors=True)
        if self.postgres.process is None:
            self.postgres.start()
        if self.object_store.process is None:
            self.object_store.start()

    def stop_backends(self) -> None:
        for backend in (self.object_store, self.postgres):
            if backend is not None:
                backend.stop()

    # -- the services -------------------------------------------------------------------

    def start(self, service: str, timeout: float = 180.0, replica: int | None = None) -> None:
        self.launch(service, replica)
        self.wait_ready(service, timeout, replica)

    def launch(self, service: str, replica: int | None = None) -> None:
        """Starts the process(es) without waiting: other work can overlap a slow start."""
        for i in self._replicas(service, replica):
            self._launch_one(service, i)

    def _launch_one(self, service: str, replica: int) -> None:
        name = self.process_name(service, replica)
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        prefix = f"LORAPLEX_{service.upper()}_"
        env = {
            **os.environ,
            **self.env,
            "PYTHONUNBUFFERED": "1",
            f"{prefix}PORT": str(self.ports[service][replica]),
            f"{prefix}METRICS_PORT": str(self.metrics_ports[service][replica]),
        }
        if service in self.openai_ports:
            env[f"{prefix}OPENAI_PORT"] = str(self.openai_ports[service][replica])
        if self.replicas:
            data = self.replica_data_dir(service, replica)
            data.mkdir(parents=True, exist_ok=True)
            models = data / "models"
            if not models.exists():
                (self.data_dir / "models").mkdir(parents=True, exist_ok=True)
                models.symlink_to(self.data_dir / "models", target_is_directory=True)
            env["LORAPLEX_DATA_DIR"] = str(data)
            # Who this replica is to the others, as a pod's name and address are: a
            # restarted replica comes back as itself (training takes its own jobs back at
            # once, retrieval's peers reach it at the same address).
            env[f"{prefix}REPLICA_ID"] = name
            env[f"{prefix}ADVERTISE_ADDRESS"] = self.replica_address(service, replica)
        log_file = (logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log_file.close()

    def wait_ready(self, service: str, timeout: float = 180.0, replica: int | None = None) -> None:
        for i in self._replicas(service, replica):
            name = self.process_name(service, i)
            try:
                if service == GATEWAY:  # HTTP only: its gRPC health carries liveness alone
                    wait_until_http_ok(f"{self.http_url(service)}/health", timeout,
                                       self.processes[name])  # fmt: skip
                else:
                    wait_until_serving(
                        self.replica_address(service, i), FULL_NAMES[service], timeout,
                        self.processes[name],
                    )  # fmt: skip
            except (TimeoutError, RuntimeError):
                tail = (self.data_dir / "logs" / f"{name}.log").read_text()[-3000:]
                self.stop(service, replica=i)
                raise RuntimeError(f"{name} did not become ready; its log ends:\n{tail}") from None

    def kill(self, service: str, replica: int = 0) -> None:
        """SIGKILL: no chance to flush anything that was not already durable."""
        process = self.processes.pop(self.process_name(service, replica))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def restart(self, service: str, replica: int = 0, timeout: float = 600.0) -> None:
        """Starts a killed or stopped replica again and waits until it is ready."""
        self.stop(service, replica=replica)
        self.start(service, timeout, replica)

    def stop(self, service: str, timeout: float = 60.0, replica: int | None = None) -> None:
        for i in self._replicas(service, replica):
            process = self.processes.pop(self.process_name(service, i), None)
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)

    def start_all(self, services: tuple[str, ...] = SERVICES, timeout: float = 180.0) -> None:
        """Backends first (when replicated), then every replica: launched together, then
        waited for, so slow starts overlap."""
        self.start_backends()
        for service in services:
            self.launch(service)
        for service in services:
            self.wait_ready(service, timeout)

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            service, _, replica = name.partition("-")
            self.stop(service, replica=int(replica) if replica else 0)
        self.stop_backends()

    def __enter__(self) -> LocalSuite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
