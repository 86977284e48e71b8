"""Restarts, kill -9 mid-upload, on-disk corruption: acknowledged data survives, junk does not."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from loraplex.client.base import ClientConfig, LoraplexClientError
from loraplex.client.registry import RegistryClient, sha256_file
from loraplex.registry.v1 import registry_service_pb2 as pb
from services.common.probes import free_port
from services.common.testing import TEST_TENANT_KEYS, server_thread, service_process
from services.registry.app import SERVICE_NAME, RegistryApp
from tests.integration.registry.adapters import make_lora_adapter
from tests.integration.registry.conftest import client_for, registry_settings

pytestmark = pytest.mark.integration


def _half_push(name: str, config: bytes, weights: bytes):
    """A push's header, its config and the first half of its weights: a push cut off."""
    yield pb.PushAdapterRequest(
        header=pb.PushHeader(
            name=name,
            files=[
                pb.FileManifest(path=p, size_bytes=len(d), sha256=hashlib.sha256(d).hexdigest())
                for p, d in (
                    ("adapter_config.json", config),
                    ("adapter_model.safetensors", weights),
                )
            ],
        )
    )
    yield pb.PushAdapterRequest(chunk=pb.FileChunk(path="adapter_config.json", data=config))
    yield pb.PushAdapterRequest(
        chunk=pb.FileChunk(path="adapter_model.safetensors", data=weights[: len(weights) // 2])
    )


def test_restart_keeps_versions_aliases_and_events(tmp_path):
    settings = registry_settings(tmp_path / "data")
    adapter = make_lora_adapter(tmp_path / "a")
    with server_thread(settings, RegistryApp(settings)) as server, client_for(server, "acme") as c:
        c.push("acme/keep", adapter, aliases=["prod"], metrics={"acc": 0.9})
        c.push("acme/keep", make_lora_adapter(tmp_path / "b", seed=5))
        last = next(iter(c.list_versions("acme/keep")))
    with server_thread(settings, RegistryApp(settings)) as server, client_for(server, "acme") as c:
        assert c.get("acme/keep@prod").metrics["acc"] == pytest.approx(0.9)
        assert c.get("acme/keep").digest == last.digest
        c.pull("acme/keep@prod", tmp_path / "out")
        assert sha256_file(tmp_path / "out" / "adapter_model.safetensors") == sha256_file(
            adapter / "adapter_model.safetensors"
        )
        assert c.push("acme/keep", adapter).version == 3


def test_corrupt_blob_is_data_loss_not_silent(acme, adapter_dir, registry_server, tmp_path):
    version = acme.push("acme/c", adapter_dir)
    weights = next(f for f in version.files if f.path.endswith(".safetensors"))
    blob = (
        registry_server.settings.data_dir / "registry" / "blobs" / "sha256"
        / weights.sha256[:2] / weights.sha256
    )  # fmt: skip
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(LoraplexClientError) as err:
        acme.pull("acme/c", tmp_path / "out")
    assert err.value.code == grpc.StatusCode.DATA_LOSS
    assert not (tmp_path / "out").exists(), "a failed pull leaves no folder behind"


def test_killed_mid_upload_leaves_nothing_behind(tmp_path):
    port = free_port()
    data_dir = tmp_path / "data"
    env = {
        "LORAPLEX_DATA_DIR": str(data_dir),
        "LORAPLEX_API_KEYS": f"acme:{TEST_TENANT_KEYS['acme']}",
        "LORAPLEX_REGISTRY_PORT": str(port),
        "LORAPLEX_REGISTRY_METRICS_PORT": "0",
        "LORAPLEX_REGISTRY_ORPHAN_GRACE_SECONDS": "0",
        "LORAPLEX_REGISTRY_PART_GRACE_SECONDS": "0",
    }
    adapter = make_lora_adapter(tmp_path / "a", rank=64, hidden=2048, layers=4)
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    config = (adapter / "adapter_config.json").read_bytes()
    config_ref = ClientConfig(address=f"127.0.0.1:{port}", api_key=TEST_TENANT_KEYS["acme"])
    half_sent = threading.Event()
    errors: list[Exception] = []

    def requests():
        yield from _half_push("acme/doomed", config, weights)
        half_sent.set()
        time.sleep(30)  # the server dies before the rest arrives

    def push():
        try:
            with RegistryClient(config=config_ref) as client:
                client._call(client.stub.PushAdapter, requests(), timeout=60)
        except Exception as exc:
            errors.append(exc)

    with service_process("services.registry", SERVICE_NAME, env, port) as process:
        uploader = threading.Thread(target=push, daemon=True)
        uploader.start()
        assert half_sent.wait(30)
        tmp_files = data_dir / "registry" / "blobs" / "tmp"
        deadline = time.monotonic() + 10
        while not any(tmp_files.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(tmp_files.iterdir()), "the upload was in flight"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        uploader.join(timeout=30)
    assert errors and errors[0].code == grpc.StatusCode.UNAVAILABLE

    with service_process("services.registry", SERVICE_NAME, env, port):
        with RegistryClient(config=config_ref) as client:
            assert list(client.list()) == []
            with pytest.raises(LoraplexClientError) as err:
                client.get("acme/doomed")
            assert err.value.code == grpc.StatusCode.NOT_FOUND
            assert client.push("acme/doomed", adapter).version == 1
        blobs = data_dir / "registry" / "blobs"
        assert not list((blobs / "tmp").iterdir())
        assert len(list((blobs / "sha256").glob("*/*"))) == 2


def test_metrics_then_sigterm_flips_health_and_exits_cleanly(tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port, metrics_port = free_port(), free_port()
    env = {
        "LORAPLEX_DATA_DIR": str(tmp_path / "data"),
        "LORAPLEX_API_KEYS": f"acme:{TEST_TENANT_KEYS['acme']}",
        "LORAPLEX_REGISTRY_PORT": str(port),
        "LORAPLEX_REGISTRY_METRICS_PORT": str(metrics_port),
        "LORAPLEX_REGISTRY_GRACE_SECONDS": "2",
    }
    with service_process("services.registry", SERVICE_NAME, env, port) as process:
        config = ClientConfig(address=f"127.0.0.1:{port}", api_key=TEST_TENANT_KEYS["acme"])
        with RegistryClient(config=config) as client, pytest.raises(LoraplexClientError):
            client.get("acme/absent")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
        assert (
            'loraplex_rpc_total{code="NOT_FOUND",method="/loraplex.registry.v1.RegistryService/'
            'GetAdapter"} 1.0' in metrics
        )
        assert _listening_addresses(metrics_port) == {"127.0.0.1"}  # the service's own host
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=20
        )
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert process.wait(timeout=20) == 0
        channel.close()


def test_dead_push_leftovers_are_swept_on_a_timer_but_live_pushes_are_not(tmp_path):
    """A killed push's temp file goes without a restart; a slow live push keeps its own."""
    settings = registry_settings(
        tmp_path / "data", sweep_interval_seconds=0.2, part_grace_seconds=1
    )
    adapter = make_lora_adapter(tmp_path / "a")
    config = (adapter / "adapter_config.json").read_bytes()
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    release, half_sent = threading.Event(), threading.Event()
    outcome: list[object] = []

    def requests():
        yield from _half_push("acme/slow", config, weights)
        half = len(weights) // 2
        half_sent.set()
        release.wait(60)
        yield pb.PushAdapterRequest(
            chunk=pb.FileChunk(path="adapter_model.safetensors", data=weights[half:])
        )

    with server_thread(settings, RegistryApp(settings)) as server, client_for(server, "acme") as c:
        tmp_files = settings.data_dir / "registry" / "blobs" / "tmp"
        dead = tmp_files / "dead-push.part"
        dead.write_bytes(b"half an upload")
        os.utime(dead, (time.time() - 3600, time.time() - 3600))

        def push():
            try:
                outcome.append(c._call(c.stub.PushAdapter, requests(), timeout=120).version)
            except LoraplexClientError as err:
                outcome.append(err.code)

        uploader = threading.Thread(target=push)
        uploader.start()
        try:
            assert half_sent.wait(30)
            deadline = time.monotonic() + 30
            while dead.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not dead.exists(), "the dead push's temp file was swept without a restart"
            time.sleep(2.5)  # the live push's temp files are now older than the grace period
            # Both of its files: the config (spooled until the whole push is checked) and
            # the half-sent weights.
            live = list(tmp_files.iterdir())
            assert len(live) == 2 and all(p.suffix == ".part" for p in live)
        finally:
            release.set()
            uploader.join(60)
        (version,) = outcome
        assert version.name == "acme/slow", outcome
        assert not list(tmp_files.iterdir())


def _listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on `port`, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return found
