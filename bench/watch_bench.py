"""Registry cost of alias watches: 1,000 tenants followed by 2 inference replicas.

Before (the baseline, today's design until this change): each replica opens one
WatchAdapters stream per tenant, and every stream polls the database once per
interval. After: each replica opens one WatchTenantAdapters stream naming all its
tenants, and one poller per registry process feeds every stream.

The registry runs as its own process (as deployed) on SQLite; a SQLAlchemy event
listener in it counts the queries, and its CPU time is read from the OS. Both runs
use the same process code apart from the watch; the baseline's watch loop is the
old one, kept here. Prints a table with ratios.

    .venv/bin/python -m bench.watch_bench [--tenants 1000] [--replicas 2] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil

from loraplex.registry.v1 import registry_service_pb2 as pb
from loraplex.registry.v1 import registry_service_pb2_grpc as pb_grpc
from services.common.auth import AUTHORIZATION_HEADER
from services.common.channels import acting_for, open_channel
from services.common.probes import free_port
from services.common.testing import TEST_SERVICE_KEYS
from services.registry.app import SERVICE_NAME

POLL_SECONDS = 1.0


# -- the registry process ---------------------------------------------------------------


def serve(mode: str, port: int, data: Path, counter: Path) -> None:
    """Runs a registry on `port`; writes its query count to `counter` four times a second."""
    from sqlalchemy import event

    import services.registry.app as registry_app
    from services.common.auth import KeyRing
    from services.common.server import Server
    from services.registry.registry import Registry, _current_alias_event
    from services.registry.settings import RegistrySettings

    class BaselineRegistry(Registry):
        """The watch as it was: every stream polls the database for its own tenant."""

        async def watch(self, tenant, name="", after_sequence=0, include_current=False):
            adapter_name = self._owned(tenant, name).name if name else ""
            last = after_sequence or await self._run(self.store.last_sequence)
            if include_current:
                for alias in await self._run(self.store.aliases, [tenant], adapter_name):
                    yield _current_alias_event(alias, last)
            while True:
                events = await self._run(self.store.events_after, last, tenant)
                for item in events:
                    last = item.sequence
                    yield item
                if not events:
                    await asyncio.sleep(self.hub.poll_seconds)

    if mode == "baseline":
        registry_app.Registry = BaselineRegistry
    settings = RegistrySettings(
        data_dir=data,
        host="127.0.0.1",
        port=port,
        metrics_port=0,
        watch_poll_seconds=POLL_SECONDS,
        log_level="WARNING",
    )
    app = registry_app.RegistryApp(settings)
    keyring = KeyRing.load(service_keys=f"inference:{TEST_SERVICE_KEYS['inference']}")

    async def main() -> None:
        server = Server(settings, app, keyring)
        await server.start()
        queries = 0

        def count(*args) -> None:
            nonlocal queries
            queries += 1

        event.listen(app.registry.store.engine, "before_cursor_execute", count)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        while not stop.is_set():
            await asyncio.to_thread(counter.write_text, str(queries))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
        await server.stop(grace=1)

    asyncio.run(main())


# -- the replicas -----------------------------------------------------------------------


async def baseline_streams(stub, tenants: list[str]) -> list:
    key = TEST_SERVICE_KEYS["inference"]
    return [
        stub.WatchAdapters(
            pb.WatchAdaptersRequest(include_current=True), metadata=acting_for(key, tenant)
        )
        for tenant in tenants
    ]


async def shared_stream(stub, tenants: list[str]) -> list:
    async def requests():
        yield pb.WatchTenantAdaptersRequest(tenants=tenants, include_current=True)
        await asyncio.sleep(3600)

    metadata = ((AUTHORIZATION_HEADER, f"Bearer {TEST_SERVICE_KEYS['inference']}"),)
    return [stub.WatchTenantAdapters(requests(), metadata=metadata)]


def read_count(counter: Path) -> int:
    return int(counter.read_text() or 0)


async def measure(mode: str, tenants: int, replicas: int, seconds: float, work: Path) -> dict:
    port = free_port()
    counter = work / f"{mode}.count"
    counter.write_text("0")
    command = [
        sys.executable, "-m", "bench.watch_bench", "--serve", mode, "--port", str(port),
        "--data", str(work / mode), "--counter", str(counter),
    ]  # fmt: skip
    names = [f"t{i:04d}" for i in range(tenants)]
    env = {"PYTHONPATH": os.getcwd()}
    with service_process_command(command, env, port) as process:
        channels = [open_channel(f"127.0.0.1:{port}") for _ in range(replicas)]
        calls = []
        for channel in channels:
            stub = pb_grpc.RegistryServiceStub(channel)
            open_streams = baseline_streams if mode == "baseline" else shared_stream
            calls += await open_streams(stub, names)
        await asyncio.sleep(max(5.0, tenants * replicas / 400))  # streams open and settle
        proc = psutil.Process(process.pid)
        cpu0, q0, t0 = sum(proc.cpu_times()[:2]), read_count(counter), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, q1, t1 = sum(proc.cpu_times()[:2]), read_count(counter), time.monotonic()
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()
    elapsed = t1 - t0
    return {
        "streams": len(calls),
        "qps": (q1 - q0) / elapsed,
        "cpu": 100 * (cpu1 - cpu0) / elapsed,
    }


@contextlib.contextmanager
def service_process_command(command: list[str], env: dict[str, str], port: int):
    """service_process, for a command that is not `python -m <service>`."""
    import subprocess

    from services.common.probes import wait_until_serving

    process = subprocess.Popen(command, env={**os.environ, **env})
    try:
        wait_until_serving(f"127.0.0.1:{port}", SERVICE_NAME, 60, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--serve", choices=["baseline", "hub"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--counter", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.data, args.counter)
        return

    work = Path(tempfile.mkdtemp(prefix="watch-bench-"))

    async def both() -> tuple[dict, dict]:  # one loop: grpc.aio stays bound to the first
        before = await measure("baseline", args.tenants, args.replicas, args.seconds, work)
        after = await measure("hub", args.tenants, args.replicas, args.seconds, work)
        return before, after

    before, after = asyncio.run(both())
    print(
        f"\nRegistry cost of watching {args.tenants} tenants from {args.replicas} replicas"
        f" (SQLite, poll {POLL_SECONDS:g} s, {args.seconds:g} s window;"
        f" {platform.processor() or platform.machine()}, {os.cpu_count()} cores)\n"
    )
    print("| | streams | DB queries/s | registry CPU % of a core |")
    print("|---|---:|---:|---:|")
    for label, row in (("before: stream per tenant", before), ("after: one per replica", after)):
        print(f"| {label} | {row['streams']} | {row['qps']:.1f} | {row['cpu']:.1f} |")
    ratio_q = before["qps"] / after["qps"] if after["qps"] else float("inf")
    ratio_c = before["cpu"] / after["cpu"] if after["cpu"] else float("inf")
    print(f"| ratio before/after | | {ratio_q:.0f}x | {ratio_c:.1f}x |")
    due = args.tenants * args.replicas / POLL_SECONDS
    print(
        f"\nBefore, {due:.0f} polls/s were due; fewer means the registry was saturated and"
        " its watch streams fell behind."
    )


if __name__ == "__main__":
    main()
