"""The kit's parts without a server: readiness gate, blocking helper, close, backoff, mapping."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from sqlalchemy import text

from services.common import errors
from services.common.calls import CallPolicy, translate
from services.common.kit import Kit
from services.common.readiness import Readiness
from services.common.settings import ServiceSettings


def test_readiness_refuses_with_its_message_until_open():
    gate = Readiness("the registry is starting; retry shortly")
    with pytest.raises(errors.Unavailable) as err:
        gate.check()
    assert err.value.message == "the registry is starting; retry shortly"
    assert not gate.ready
    gate.open()
    gate.check()
    assert gate.ready


async def test_blocking_runs_off_the_loop_on_a_bounded_executor(tmp_path):
    kit = Kit(ServiceSettings(service_name="svc", executor_threads=2))
    loop_thread = threading.get_ident()
    running, peak, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def work(tag: str, *, suffix: str = "") -> tuple[str, int]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(5)
        with lock:
            running -= 1
        return tag + suffix, threading.get_ident()

    tasks = [asyncio.create_task(kit.blocking(work, str(i), suffix="!")) for i in range(5)]
    await asyncio.sleep(0.2)
    assert running == 2  # the executor is bounded by executor_threads
    release.set()
    results = await asyncio.gather(*tasks)
    assert [r[0] for r in results] == [f"{i}!" for i in range(5)]
    assert loop_thread not in {r[1] for r in results}
    assert peak == 2
    await kit.close()


async def test_close_disposes_engines_and_stops_the_executor(tmp_path):
    kit = Kit(ServiceSettings(service_name="svc"))
    engine = kit.database(f"sqlite:///{tmp_path / 'x.db'}")
    assert await kit.blocking(lambda: engine.connect().execute(text("select 1")).scalar()) == 1
    await kit.close()
    with pytest.raises(RuntimeError):
        kit.executor.submit(print)


def test_backoff_doubles_with_jitter_and_is_capped():
    policy = CallPolicy(first_backoff=0.2, max_backoff=1.0)
    for attempt, ceiling in ((1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)):
        for _ in range(20):
            assert ceiling / 2 <= policy.backoff(attempt) <= ceiling


class _Error(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("code", "expected", "message"),
    [
        (grpc.StatusCode.NOT_FOUND, errors.NotFound, "adapter acme/x not found"),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument, "adapter acme/x not found"),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition, "adapter acme/x"),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists, "adapter acme/x"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded, "adapter acme/x"),
        (grpc.StatusCode.DATA_LOSS, errors.DataLoss, "adapter acme/x"),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unavailable, "does not accept this service's key"),
        (grpc.StatusCode.INTERNAL, errors.Unavailable, "registry is unavailable (INTERNAL)"),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable, "registry is unavailable (UNAVAILABLE)"),
    ],
)
def test_remote_statuses_map_back_to_domain_errors(code, expected, message):
    error = translate(_Error(code, "adapter acme/x not found"), "registry")
    assert type(error) is expected
    assert message in error.message


def test_free_port_never_hands_out_the_same_port_twice(monkeypatch):
    import socket

    from services.common import probes

    offered = iter([41001, 41001, 41002])  # the OS offers a port again once its socket closed

    class _Socket:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            self.port = next(offered)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(probes, "_handed_out", set())
    monkeypatch.setattr(socket, "socket", _Socket)
    assert [probes.free_port(), probes.free_port()] == [41001, 41002]
