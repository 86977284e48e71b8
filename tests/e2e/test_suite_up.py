"""`loraplex suite up --replicas 2` as a person runs it: PostgreSQL and the S3 emulator,
two registry and two retrieval replicas and the OpenAI gateway, the addresses printed; a
push through one every-replica address is read back from each replica; the one printed
OpenAI base URL serves the official client; Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
from openai import OpenAI

from loraplex.client import RegistryClient
from services.suite_backends import postgres_bindir
from tests.e2e.test_local_suite import CLI, User
from tests.tiny_llm import build_tiny_llama, make_random_lora

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(postgres_bindir() is None, reason="needs PostgreSQL server binaries"),
]


#: Ctrl-C to every process stopped (each replica drains, then the backends stop); generous
#: for a loaded machine. The test sends SIGINT itself, so it also holds where pytest runs
#: with SIGINT ignored (in the background of a non-interactive shell).
STOP_SECONDS = 600


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def test_suite_up_replicas_starts_wires_and_stops_everything(tmp_path):
    data = tmp_path / "data"
    up = subprocess.Popen(
        [*CLI, "suite", "up", "--replicas", "2", "--service", "registry",
         "--service", "retrieval", "--service", "gateway", "--free-ports",
         "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(up.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while not any(line.startswith("logs in ") for line in lines):
            assert up.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.5)
        output = "".join(lines)
        assert "emulator" in output and "PostgreSQL on 127.0.0.1:" in output
        target = re.search(r"LORAPLEX_REGISTRY_ADDR=(\S+)", output).group(1)
        keys_file = re.search(r"LORAPLEX_KEYS_FILE=(\S+)", output).group(1)
        replicas = target.split(",")
        assert len(replicas) == 2 and all(_listening(r) for r in replicas)
        base_url = re.search(r"OpenAI-compatible API \(every route, one address\): (\S+)", output)
        assert base_url, output
        backends = re.findall(r"127\.0\.0\.1:\d+", output.split("PostgreSQL on ", 1)[1])[:2]
        assert all(_listening(b) for b in backends)

        user = User({"LORAPLEX_KEYS_FILE": keys_file})
        key = user.run("keys", "create", "--tenant", "acme").stdout.strip().splitlines()[-1]
        tiny = build_tiny_llama(tmp_path / "tiny")
        lora = make_random_lora(tmp_path / "lora", tiny, base_model_name="tiny")
        with RegistryClient(target, key) as registry:
            pushed = registry.push("acme/one", lora).version
        for replica in replicas:  # the same version, with its blobs, on each replica
            with RegistryClient(replica, key) as registry:
                pulled = registry.pull("acme/one", tmp_path / replica.replace(":", "_"))
                assert pulled.version == pushed
        openai = OpenAI(base_url=base_url.group(1), api_key=key, max_retries=0)
        store = openai.vector_stores.create(name="handbook")
        assert [s.id for s in openai.vector_stores.list()] == [store.id]
        openai.vector_stores.delete(store.id)
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            up.kill()
            reader.join(timeout=10)
            pytest.fail(f"suite up did not stop in {STOP_SECONDS} s:\n{''.join(lines)}")
    reader.join(timeout=10)
    assert up.returncode == 0, "".join(lines)
    assert not any(_listening(a) for a in [*replicas, *backends]), "".join(lines)
