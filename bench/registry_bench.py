"""Registry push/pull throughput against a plain file copy on the same disk.

Runs a real registry server as its own process on loopback (as deployed: no GIL
shared with the client) and the SDK client, then copies the same files with
shutil + fsync as the baseline (what any upload must at least cost). Also times
the weight-value check a push runs (NaN/inf/magnitude, services.common.adapter_weights)
on its own, to show its share of a push. Prints a table; figures go in the issue note
and README.

    .venv/bin/python -m bench.registry_bench [--sizes 10 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from loraplex.client.base import ClientConfig
from loraplex.client.registry import RegistryClient
from services.common.adapter_weights import check_folder_weights
from services.common.probes import free_port
from services.common.testing import TEST_TENANT_KEYS, service_process
from services.registry.app import SERVICE_NAME
from tests.integration.registry.adapters import make_big_adapter


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def copy_with_fsync(source: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    for path in source.iterdir():
        target = dest / path.name
        shutil.copyfile(path, target)
        with target.open("rb+") as handle:
            os.fsync(handle.fileno())


def best_of(repeat: int, action) -> float:
    """Median seconds of `repeat` runs of `action(i)`."""
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        action(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="MB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    port = free_port()
    env = {
        "LORAPLEX_DATA_DIR": str(work / "data"),
        "LORAPLEX_API_KEYS": f"acme:{TEST_TENANT_KEYS['acme']}",
        "LORAPLEX_REGISTRY_PORT": str(port),
        "LORAPLEX_REGISTRY_METRICS_PORT": "0",
        "LORAPLEX_LOG_LEVEL": "WARNING",
    }
    rows = []
    try:
        with service_process("services.registry", SERVICE_NAME, env, port):
            config = ClientConfig(
                address=f"127.0.0.1:{port}", api_key=TEST_TENANT_KEYS["acme"], timeout=600
            )
            with RegistryClient(config=config) as client:
                for size in args.sizes:
                    source = make_big_adapter(work / f"src{size}", size)
                    total = folder_bytes(source)
                    mb = total / 1e6

                    def copy(i: int, source: Path = source, size: int = size) -> None:
                        copy_with_fsync(source, work / f"copy{size}-{i}")

                    def push(i: int, source: Path = source, size: int = size) -> None:
                        # a new name each time: content dedup must not make pushes free
                        (source / "README.md").write_text(f"run {i}")
                        client.push(f"acme/bench-{size}-{i}", source)

                    def pull(i: int, size: int = size) -> None:
                        client.pull(f"acme/bench-{size}-0", work / f"pull{size}-{i}")

                    copy_s = best_of(args.repeat, copy)
                    push_s = best_of(args.repeat, push)
                    pull_s = best_of(args.repeat, pull)
                    check_s = best_of(args.repeat, lambda i, s=source: check_folder_weights(s))
                    rows.append((size, mb, mb / copy_s, mb / push_s, mb / pull_s, check_s / push_s))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"registry throughput — {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, median of {args.repeat}"
    )
    header = f"{'adapter':>8} {'MB':>7} {'copy MB/s':>10} {'push MB/s':>10} {'pull MB/s':>10}"
    header += f" {'push/copy':>10} {'pull/copy':>10} {'check/push':>11}"
    print(header)
    for size, mb, copy_rate, push_rate, pull_rate, check_share in rows:
        print(
            f"{size:>6}MB {mb:>7.1f} {copy_rate:>10.0f} {push_rate:>10.0f} {pull_rate:>10.0f}"
            f" {push_rate / copy_rate:>10.2f} {pull_rate / copy_rate:>10.2f} {check_share:>11.2f}"
        )


if __name__ == "__main__":
    main()
