"""S3-compatible object storage for tests: moto's standalone server on loopback.

moto is an EMULATOR of S3, not S3: no MinIO (or other real S3-compatible server)
is installable here, so the S3 backend is tested against moto's HTTP server,
run as its own process and reached through boto3 exactly as a real endpoint
would be. Use `moto_endpoint()` for a server, `s3_blob_settings(endpoint)` for a
fresh bucket on it, or the pytest fixtures below (import them into a test module).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from services.common.blobstore import BlobSettings
from services.common.probes import free_port

#: What the emulator accepts; a real store would get real credentials from the env.
REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


@contextlib.contextmanager
def moto_endpoint() -> Iterator[str]:
    """Starts moto's standalone S3 emulator on 127.0.0.1; yields its endpoint URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = _client(endpoint)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def _client(endpoint: str):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
    )  # fmt: skip


def s3_blob_settings(endpoint: str, spool_dir: Path, prefix: str = "loraplex") -> BlobSettings:
    """A fresh bucket on the emulator, as `BlobSettings` a service would be given."""
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    _client(endpoint).create_bucket(Bucket=bucket)
    return BlobSettings(
        url=f"s3://{bucket}/{prefix}",
        endpoint_url=endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        addressing_style="path",
        part_bytes=5 * 1024 * 1024,
        spool_dir=spool_dir,
    )


def s3_fields(settings: BlobSettings) -> dict[str, object]:
    """The same settings as a service's `blob_*` fields (`BlobStoreFields`)."""
    return {f"blob_{name}": value for name, value in settings.model_dump().items()}


def s3_env(settings: BlobSettings, service: str) -> dict[str, str]:
    """The same settings as `LORAPLEX_<SERVICE>_BLOB_*` variables, for service processes."""
    name = f"LORAPLEX_{service.upper()}_BLOB_"
    return {
        f"{name}URL": settings.url,
        f"{name}ENDPOINT_URL": settings.endpoint_url,
        f"{name}REGION": settings.region,
        f"{name}ACCESS_KEY_ID": settings.access_key_id,
        f"{name}SECRET_ACCESS_KEY": settings.secret_access_key.get_secret_value(),
        f"{name}ADDRESSING_STYLE": settings.addressing_style,
    }


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One emulator per test session (buckets keep tests apart)."""
    with moto_endpoint() as endpoint:
        yield endpoint


@pytest.fixture
def s3_settings(s3_endpoint: str, tmp_path: Path) -> BlobSettings:
    return s3_blob_settings(s3_endpoint, tmp_path / "s3-spool")
