"""Finding a free port and waiting for a server's readiness probe, outside Kubernetes.

Used by the local suite runner (`loraplex suite up`, the demo) and by tests.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time

import grpc

_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A free loopback port this process has not handed out before: the socket closes
    before the caller binds, so the OS may offer the same port to the next call, and a
    suite picking two dozen ports at once once gave two replicas the same one."""
    with _handed_out_lock:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def wait_until_serving(
    target: str, service: str, timeout: float = 60.0, process: subprocess.Popen | None = None
) -> None:
    """Blocks until the health service reports `service` SERVING (the readiness probe)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{service} exited with code {process.returncode}")
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
    raise TimeoutError(f"{service} at {target} not serving after {timeout}s")


def wait_until_http_ok(
    url: str, timeout: float = 60.0, process: subprocess.Popen | None = None
) -> None:
    """Blocks until `GET url` answers 200 (an HTTP-only service's readiness probe)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url} exited with code {process.returncode}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=1) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} not answering 200 after {timeout}s")
