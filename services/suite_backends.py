"""PostgreSQL and an S3-compatible object store as local processes, for `suite up --replicas`.

Both are throwaway: PostgreSQL runs in a fresh temporary folder and the object store is
moto's standalone server, an in-memory *emulator* of S3 (no MinIO package can be installed
here). In a cluster the same settings point at a real PostgreSQL and a real S3, MinIO or
GCS-interop endpoint (deploy/kustomize/components/object-store).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.common.probes import free_port

#: Credentials the emulator accepts (it accepts any); real deployments take theirs from a Secret.
EMULATOR_KEY_ID = "loraplex-local"
EMULATOR_SECRET = "loraplex-local-secret"
EMULATOR_REGION = "us-east-1"


class BackendError(RuntimeError):
    """A backing server could not start; the message says which and why."""


def postgres_bindir() -> Path | None:
    """The newest installed Debian PostgreSQL server binaries, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


def _wait(check, what: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise BackendError(f"{what} exited with code {process.returncode}: {_tail(log)}")
        try:
            check()
            return
        except Exception as error:
            if time.monotonic() > deadline:
                message = f"{what} not reachable after {timeout:.0f}s ({error}): {_tail(log)}"
                raise BackendError(message) from None
            time.sleep(0.2)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


class LocalPostgres:
    """One PostgreSQL server from the installed binaries, one database per service.

    Under root it runs as the `postgres` user (PostgreSQL refuses root), in a folder under
    /tmp that user can reach; the folder is deleted at `stop()`.
    """

    def __init__(self, databases: tuple[str, ...], log: Path) -> None:
        self.databases = databases
        self.log = log
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.root: Path | None = None

    def start(self, timeout: float = 60.0) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise BackendError(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres); "
                "install the Debian `postgresql` package"
            )
        self.root = Path(tempfile.mkdtemp(prefix="loraplex-suite-pg-"))
        data = self.root / "pgdata"
        data.mkdir()
        as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(data, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        initdb = subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            capture_output=True, text=True,
        )  # fmt: skip
        if initdb.returncode != 0:
            raise BackendError(f"initdb failed: {initdb.stderr[-2000:]}")
        self.port = self.port or free_port()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*as_user, str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(data), "-c", "max_connections=300"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        import psycopg

        def connect() -> None:
            psycopg.connect(self._dsn("postgres"), connect_timeout=2).close()

        _wait(connect, "PostgreSQL", self.process, self.log, timeout)
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            for name in self.databases:
                conn.execute(f'CREATE DATABASE "{name}"')

    def _dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of one service's database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        _stop(self.process)
        self.process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


class LocalObjectStore:
    """moto's standalone S3 server (an emulator, in memory) with one bucket for the suite."""

    def __init__(self, bucket: str, log: Path) -> None:
        self.bucket = bucket
        self.log = log
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        server = Path(sys.executable).parent / "moto_server"
        if not server.exists():
            raise BackendError(
                f"{server} not found: install the dev extra (moto[server]) for the local "
                "S3 emulator"
            )
        self.port = self.port or free_port()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        client = self.client()
        _wait(client.list_buckets, "the S3 emulator (moto_server)", self.process, self.log, timeout)
        client.create_bucket(Bucket=self.bucket)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=EMULATOR_KEY_ID,
            aws_secret_access_key=EMULATOR_SECRET,
            region_name=EMULATOR_REGION,
        )

    def stop(self) -> None:
        _stop(self.process)
        self.process = None
