"""Registry benchmark on both blob backends: push/pull throughput and cold-adapter resolves.

1. Throughput. A real registry server as its own process on loopback (as deployed:
   no GIL shared with the client) and the SDK client, on each blob backend: local
   files, and S3 through moto's standalone server (an EMULATOR of S3, in memory, on
   loopback: no MinIO is installable here, so S3 figures say nothing of a real
   store's network). Baseline: the same files copied with shutil + fsync (what any
   upload must at least cost). Also the weight-value check's share of a push.
2. Cold resolve, in one process: the registry store with 50 versions of one
   adapter. Today's query path (kept below as `legacy_resolve`: the adapter with
   every version and every file, run twice per cold load, once for
   CheckCompatibility and once for DownloadAdapter) against the new one (one
   version row, once), on SQLite and, when installed, PostgreSQL.
3. Cold load over gRPC, as inference does it: today's server (the code at
   `--baseline`, exported with git archive; local files only, it knows no S3) with
   today's two calls (CheckCompatibility, then DownloadAdapter of that version),
   against this server with one DownloadAdapter, and with the same two calls, on
   each backend. A 2-file adapter: the calls' own cost, not the bytes', dominates.

    .venv/bin/python -m bench.registry_bench [--sizes 10 100] [--repeat 3] [--versions 50]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from loraplex.client.base import ClientConfig
from loraplex.client.registry import RegistryClient
from loraplex.registry.v1 import registry_service_pb2 as pb
from services.common.adapter_ref import AdapterName, AdapterRef, parse_ref
from services.common.adapter_weights import check_folder_weights
from services.common.db import make_engine, sqlite_url
from services.common.errors import NotFound
from services.common.probes import free_port
from services.common.testing import TEST_TENANT_KEYS, service_process
from services.registry.app import SERVICE_NAME
from services.registry.models import AdapterRow, VersionRow
from services.registry.peft_files import PeftInfo, parse_config
from services.registry.records import FileRecord, VersionRecord, now
from services.registry.store import AdapterStore, _effective
from tests.integration.registry.adapters import make_big_adapter, make_lora_adapter
from tests.object_store import moto_endpoint, s3_blob_settings, s3_env
from tests.postgres import postgres_bin, postgres_server

#: Today's implementation, before BlobStore and the one-row resolve.
BASELINE = "e6d9500"
#: What inference sends: SmolLM2's attention modules and its engine's limits.
NEEDS = {
    "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "max_rank": 64,
    "available_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "supported_peft_types": ["LORA"],
}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def copy_with_fsync(source: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    for path in source.iterdir():
        target = dest / path.name
        shutil.copyfile(path, target)
        with target.open("rb+") as handle:
            os.fsync(handle.fileno())


def median_of(repeat: int, action: Callable[[int], object]) -> float:
    """Median seconds of `repeat` runs of `action(i)`."""
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        action(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- servers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def registry(
    work: Path, backend: str, endpoint: str, code_root: Path | None = None
) -> Iterator[RegistryClient]:
    """A registry process (this code, or the code under `code_root`) and a client."""
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix=f"data-{backend}-", dir=work))
    env = {
        "LORAPLEX_DATA_DIR": str(data),
        "LORAPLEX_API_KEYS": f"acme:{TEST_TENANT_KEYS['acme']}",
        "LORAPLEX_REGISTRY_PORT": str(port),
        "LORAPLEX_REGISTRY_METRICS_PORT": "0",
        "LORAPLEX_LOG_LEVEL": "WARNING",
    }
    if backend == "s3":
        env |= s3_env(s3_blob_settings(endpoint, data / "spool"), "registry")
    if code_root is not None:
        env["PYTHONPATH"] = str(code_root)
    config = ClientConfig(
        address=f"127.0.0.1:{port}", api_key=TEST_TENANT_KEYS["acme"], timeout=600
    )
    with (
        contextlib.chdir(code_root or Path.cwd()),  # `python -m` imports from here first
        service_process("services.registry", SERVICE_NAME, env, port),
        RegistryClient(config=config) as client,
    ):
        yield client


def export_baseline(work: Path, revision: str) -> Path | None:
    """Today's code in a folder of its own, with its stubs generated; None if unavailable."""
    root = work / "baseline"
    archive = work / "baseline.tar"
    try:
        with archive.open("wb") as out:
            subprocess.run(["git", "archive", revision], stdout=out, check=True)
        root.mkdir()
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        subprocess.run(
            [sys.executable, "scripts/gen_protos.py"], cwd=root, check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"(no baseline server: {error})")
        return None
    return root


# -- 1. throughput ----------------------------------------------------------------------------


def throughput(client: RegistryClient, work: Path, sizes: list[int], repeat: int) -> list:
    rows = []
    for size in sizes:
        source = make_big_adapter(work / f"src{size}", size)
        mb = folder_bytes(source) / 1e6

        def copy(i: int, source: Path = source, size: int = size) -> None:
            copy_with_fsync(source, work / f"copy{size}-{i}")

        def push(i: int, source: Path = source, size: int = size) -> None:
            # a new name and content each time: dedup must not make pushes free
            (source / "README.md").write_text(f"run {i}")
            client.push(f"acme/bench-{size}-{i}", source)

        def pull(i: int, size: int = size) -> None:
            client.pull(f"acme/bench-{size}-0", work / f"pull{size}-{i}")

        copy_s = median_of(repeat, copy)
        push_s = median_of(repeat, push)
        pull_s = median_of(repeat, pull)
        check_s = median_of(repeat, lambda i, s=source: check_folder_weights(s))
        rows.append((size, mb, mb / copy_s, mb / push_s, mb / pull_s, check_s / push_s))
    return rows


# -- 2. cold resolve in one process -----------------------------------------------------------


def legacy_resolve(store: AdapterStore, ref: AdapterRef) -> VersionRecord:
    """Today's resolve (services/registry/store.py at BASELINE), kept as the baseline:
    loads the adapter with every version and every file, then picks one."""
    moment = now()
    with Session(store.engine) as session:
        adapter = session.scalar(
            select(AdapterRow)
            .where(AdapterRow.tenant == ref.adapter.tenant, AdapterRow.name == ref.adapter.name)
            .options(
                selectinload(AdapterRow.versions).selectinload(VersionRow.files),
                selectinload(AdapterRow.aliases),
            )
        )
        if adapter is None:
            raise NotFound(f"adapter {ref.adapter} not found")
        number = ref.version
        if ref.alias:
            alias = next((a for a in adapter.aliases if a.alias == ref.alias), None)
            number = _effective(alias, moment) if alias else 0
            if not number:
                raise NotFound(f"alias {ref.alias!r} of {ref.adapter} not found")
        versions = adapter.versions
        row = next((v for v in versions if v.version == number), None) if number else None
        if number is None:
            row = versions[-1] if versions else None
        if row is None:
            raise NotFound(f"{ref} not found")
        return store._record(row, adapter, moment)


def fill_store(store: AdapterStore, versions: int, peft: PeftInfo) -> None:
    name = AdapterName("acme", "bot")
    for n in range(1, versions + 1):
        files = [
            FileRecord("adapter_config.json", 400, f"{n:064x}"),
            FileRecord("adapter_model.safetensors", 16_000, f"{n + 10**6:064x}"),
            FileRecord("README.md", 100, f"{n + 2 * 10**6:064x}"),
        ]
        aliases = ["prod"] if n == versions // 2 else []
        store.create_version(name, files, peft, {"job": str(n)}, {"loss": 1.0}, "v", aliases)


def cold_resolve(url: str, versions: int, repeat: int, peft: PeftInfo) -> list:
    store = AdapterStore(make_engine(url))
    fill_store(store, versions, peft)
    rows = []
    for text in ("acme/bot", "acme/bot@prod", "acme/bot@1"):
        ref = parse_ref(text)
        assert legacy_resolve(store, ref) == store.resolve(ref)
        store.resolve(ref)  # warm the connection pool and statement caches alike
        legacy_resolve(store, ref)
        today = median_of(
            repeat, lambda i, r=ref: (legacy_resolve(store, r), legacy_resolve(store, r))
        )
        new = median_of(repeat, lambda i, r=ref: store.resolve(r))
        rows.append((text, today, new))
    store.engine.dispose()
    return rows


# -- 3. cold load over gRPC -------------------------------------------------------------------


def push_versions(client: RegistryClient, work: Path, versions: int) -> None:
    for n in range(versions):
        folder = make_lora_adapter(work / f"v{n}", seed=n)
        client.push("acme/cold", folder, aliases=["prod"] if n == versions // 2 else None)


def cold_load_today(client: RegistryClient, ref: str) -> None:
    """What inference did: CheckCompatibility, then DownloadAdapter of that exact version."""
    checked = client._call(
        client.stub.CheckCompatibility, pb.CheckCompatibilityRequest(ref=ref, **NEEDS)
    )
    exact = f"{checked.version.name}@{checked.version.version}"
    for _ in client._stream(client.stub.DownloadAdapter, pb.DownloadAdapterRequest(ref=exact), 60):
        pass


def cold_load_new(client: RegistryClient, ref: str) -> None:
    """One DownloadAdapter: resolve, compatibility and bytes."""
    request = pb.DownloadAdapterRequest(ref=ref, **NEEDS)
    for _ in client._stream(client.stub.DownloadAdapter, request, 60):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100], help="MB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--cold-repeat", type=int, default=30)
    parser.add_argument("--backends", nargs="+", default=["local", "s3"])
    parser.add_argument("--baseline", default=BASELINE, help="git revision of today's code")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    label = {"local": "local files", "s3": "S3 (moto emulator)"}
    peft = parse_config_of(make_lora_adapter(work / "peft"))
    try:
        with moto_endpoint() as endpoint:
            cold_rows: list = []
            baseline = export_baseline(work, args.baseline)
            if baseline is not None:
                with registry(work, "local", endpoint, baseline) as client:
                    push_versions(client, work / "push-base", args.versions)
                    for ref in ("acme/cold", "acme/cold@prod"):
                        cold_load_today(client, ref)
                        seconds = median_of(
                            args.cold_repeat, lambda i, r=ref: cold_load_today(client, r)
                        )
                        cold_rows.append(("today: 2 calls", "local files", ref, seconds))
            rows = {}
            for backend in args.backends:
                with registry(work, backend, endpoint) as client:
                    rows[backend] = throughput(client, work / backend, args.sizes, args.repeat)
                    push_versions(client, work / f"push-{backend}", args.versions)
                    for ref in ("acme/cold", "acme/cold@prod"):
                        cold_load_new(client, ref)
                        seconds = median_of(
                            args.cold_repeat, lambda i, r=ref: cold_load_new(client, r)
                        )
                        cold_rows.append(("new: 1 call", label[backend], ref, seconds))
                        cold_load_today(client, ref)
                        seconds = median_of(
                            args.cold_repeat, lambda i, r=ref: cold_load_today(client, r)
                        )
                        cold_rows.append(("new: 2 calls", label[backend], ref, seconds))

            resolve_rows = {"SQLite": cold_resolve(
                sqlite_url(work / "resolve.db"), args.versions, args.cold_repeat, peft
            )}  # fmt: skip
            if postgres_bin() is not None:
                with postgres_server() as url:
                    resolve_rows["PostgreSQL"] = cold_resolve(
                        url, args.versions, args.cold_repeat, peft
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nregistry throughput — {machine}, median of {args.repeat}")
    header = f"{'backend':<20} {'adapter':>8} {'MB':>7} {'copy MB/s':>10} {'push MB/s':>10}"
    header += f" {'pull MB/s':>10} {'push/copy':>10} {'pull/copy':>10} {'check/push':>11}"
    print(header)
    for backend, backend_rows in rows.items():
        for size, mb, copy_rate, push_rate, pull_rate, check_share in backend_rows:
            print(
                f"{label[backend]:<20} {size:>6}MB {mb:>7.1f} {copy_rate:>10.0f}"
                f" {push_rate:>10.0f} {pull_rate:>10.0f} {push_rate / copy_rate:>10.2f}"
                f" {pull_rate / copy_rate:>10.2f} {check_share:>11.2f}"
            )

    print(
        f"\ncold resolve in one process — {args.versions} versions x 3 files of one adapter,"
        f" median of {args.cold_repeat}; today = 2 x legacy_resolve per cold load"
    )
    print(f"{'database':<11} {'ref':<15} {'today ms':>9} {'new ms':>8} {'today/new':>10}")
    for database, database_rows in resolve_rows.items():
        for text, today, new in database_rows:
            print(
                f"{database:<11} {text:<15} {today * 1e3:>9.2f} {new * 1e3:>8.2f}"
                f" {today / new:>10.1f}"
            )

    print(
        f"\ncold load over gRPC (resolve + compatibility + download of a 2-file adapter),"
        f" {args.versions} versions, median of {args.cold_repeat}, SQLite"
    )
    base = {ref: s for flow, _, ref, s in cold_rows if flow.startswith("today")}
    print(f"{'flow':<18} {'blobs':<20} {'ref':<15} {'ms':>7} {'today/this':>11}")
    for flow, backend, ref, seconds in cold_rows:
        ratio = f"{base[ref] / seconds:>11.2f}" if ref in base else f"{'n/a':>11}"
        print(f"{flow:<18} {backend:<20} {ref:<15} {seconds * 1e3:>7.2f} {ratio}")


def parse_config_of(folder: Path) -> PeftInfo:
    return parse_config(folder / "adapter_config.json")


if __name__ == "__main__":
    main()
