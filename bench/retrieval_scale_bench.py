"""Retrieval at scale: many tenants on two replicas within a memory budget, and one big
collection on one replica.

Vectors are SYNTHETIC (unit vectors near a low-rank subspace, as embeddings are) and
are written through the service's own store, index and snapshot layers, as
bench/retrieval_bench.py does: embedding a million chunks would take hours here.
Queries are embedded for real by the service. The replicas are real processes
(`python -m services.retrieval`) on a throwaway PostgreSQL, sharing snapshots in
the local-files BlobStore; calls go over gRPC to a random replica, as through a
plain Kubernetes Service (so about half of them are forwarded one hop).

- Many tenants: T tenants x C chunks (exact indexes), memory budget per replica below
  what its share of the tenants needs. Cold first search per tenant (the load from
  snapshot + replay, on the owner), warm search over a working set that fits, RSS per
  replica, and the time until a SIGKILLed replica's tenants are served again.
- One big collection: N chunks, HNSW. Build time (in-process, the service's
  `VectorIndex.build`), the index's memory, cold first search, warm p50/p99 over gRPC,
  and recall@10 against brute force on the same vectors.

- efSearch sweep (`--sweep-sizes`, nothing else runs): one HNSW graph per size over the
  big collection's vectors, built in-process (no PostgreSQL) and cached as a snapshot
  with `--sweep-cache`; recall@10 and single-query latency per efSearch, including the
  service's size-based default.

    /work/heavy .venv/bin/python -m bench.retrieval_scale_bench \\
        [--tenants 1000 --chunks 1000 --big 1000000 --queries 300]
    /work/heavy .venv/bin/python -m bench.retrieval_scale_bench \\
        --sweep-sizes 100000,300000,1000000 --sweep-cache /tmp/hnsw-sweep
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import insert, update

from loraplex.client.base import LoraplexClientError
from loraplex.client.retrieval import RetrievalClient
from services.common.blobstore import open_blob_store
from services.common.db import make_engine
from services.common.probes import free_port
from services.common.testing import service_process
from services.retrieval.app import SERVICE_NAME
from services.retrieval.chunking import Chunk
from services.retrieval.index import IndexParams, VectorIndex, auto_ef_search
from services.retrieval.live import load_collection
from services.retrieval.membership import Member, rendezvous
from services.retrieval.records import CollectionRecord, DocumentInput, IndexKind, PreparedDocument
from services.retrieval.settings import DEFAULT_EMBEDDING_MODEL, RetrievalSettings
from services.retrieval.snapshots import SnapshotStore
from services.retrieval.store import RetrievalStore, chunks, collections, documents
from tests.postgres import postgres_server

DIM = 384
RANK = 48
QUERIES = (
    "pump seal failure after the pressure test",
    "invoice due after shipment",
    "torque wrench calibration before tightening flange bolts",
    "compressor airflow filter maintenance",
    "warranty clause for the freezer",
)


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _embedding_like(rng: np.random.Generator, basis: np.ndarray, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, RANK)).astype(np.float32) @ basis
    vectors += rng.standard_normal(vectors.shape).astype(np.float32) * 0.1
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _documents(tenant: str, name: str, start: int, part: np.ndarray) -> list[PreparedDocument]:
    return [
        PreparedDocument(
            DocumentInput(f"{name}-{start + i}", "x"),
            [Chunk(0, f"{tenant} synthetic chunk {start + i}", 0, 1)],
            part[i : i + 1],
        )
        for i in range(len(part))
    ]


def _create(store: RetrievalStore, tenant: str, name: str, kind: IndexKind) -> CollectionRecord:
    record = CollectionRecord(
        0, tenant, name, DEFAULT_EMBEDDING_MODEL, DIM, kind, 200, 32, datetime.now(UTC), 0
    )
    return store.create_collection(record, max_per_tenant=100)


def _write(
    store: RetrievalStore, tenant: str, name: str, kind: IndexKind, vectors: np.ndarray
) -> CollectionRecord:
    """One-chunk documents carrying `vectors`, written through the service's store."""
    record = _create(store, tenant, name, kind)
    for start in range(0, len(vectors), 5000):
        store.write_documents(
            record, _documents(tenant, name, start, vectors[start : start + 5000])
        )
    return store.get_collection(tenant, name)


def _write_per_document(
    store: RetrievalStore, record: CollectionRecord, docs: list[PreparedDocument]
) -> None:
    """Baseline: the store's write path before 2026-12-07, one transaction per call but
    an INSERT .. RETURNING per document and per document's chunks (new collection, so
    nothing to replace)."""
    with store.engine.begin() as conn:
        revision = conn.scalar(
            update(collections)
            .where(collections.c.id == record.pk)
            .values(revision=collections.c.revision + 1)
            .returning(collections.c.revision)
        )
        for item in docs:
            doc_pk = conn.execute(
                insert(documents).values(
                    collection_id=record.pk,
                    doc_id=item.doc.doc_id,
                    metadata_json="{}",
                    source_uri="",
                    source_title="",
                    revision=revision,
                )
            ).inserted_primary_key[0]
            rows = [
                {
                    "collection_id": record.pk,
                    "document_id": doc_pk,
                    "chunk_index": chunk.index,
                    "text": chunk.text,
                    "start_char": chunk.start_char,
                    "end_char": chunk.end_char,
                    "vector": item.vectors[i].tobytes(),
                    "revision": revision,
                }
                for i, chunk in enumerate(item.chunks)
            ]
            conn.execute(insert(chunks).returning(chunks.c.id, sort_by_parameter_order=True), rows)


def bench_write(url: str, args: argparse.Namespace) -> list[str]:
    """Rows/s of the store's write path against the per-document baseline, same server."""
    store = RetrievalStore(make_engine(url))
    rng = np.random.default_rng(13)
    vectors = _embedding_like(rng, rng.standard_normal((RANK, DIM)).astype(np.float32), 5000)
    rates: dict[str, float] = {}
    for round_ in range(args.write_rounds):
        for name, write in (
            ("per-document", _write_per_document),
            ("store", RetrievalStore.write_documents),
        ):
            record = _create(store, "writer", f"{name}-{round_}", IndexKind.EXACT)
            docs = _documents("writer", record.name, 0, vectors)
            started = time.perf_counter()
            write(store, record, docs)
            rates.setdefault(name, 0.0)
            rates[name] += len(docs) / (time.perf_counter() - started) / args.write_rounds
    store.engine.dispose()
    return [
        f"| PostgreSQL write, 5,000 one-chunk documents per call, mean of {args.write_rounds}"
        f" rounds: store (batched, COPY) / baseline (statement per document) |"
        f" {rates['store']:.0f} / {rates['per-document']:.0f} rows/s ="
        f" {rates['store'] / rates['per-document']:.1f}x | |",
    ]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _env(tmp: str, url: str, keys: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "LORAPLEX_DATA_DIR": tmp,
        "LORAPLEX_API_KEYS": ",".join(f"{t}:{k}" for t, k in keys.items()),
        "LORAPLEX_RETRIEVAL_DATABASE_URL": url,
        "LORAPLEX_RETRIEVAL_BLOB_URL": Path(tmp, "snapshots").resolve().as_uri(),
        "LORAPLEX_RETRIEVAL_METRICS_PORT": "0",
        "LORAPLEX_RETRIEVAL_TORCH_THREADS": "1",
        "LORAPLEX_LOG_LEVEL": "WARNING",
        **extra,
    }


@contextlib.contextmanager
def _replica(env: dict[str, str], replica: str = "") -> Iterator[tuple[str, object]]:
    port = free_port()
    extra = {"LORAPLEX_RETRIEVAL_PORT": str(port)}
    if replica:
        extra |= {
            "LORAPLEX_RETRIEVAL_ADVERTISE_ADDRESS": f"127.0.0.1:{port}",
            "LORAPLEX_RETRIEVAL_REPLICA_ID": replica,
        }
    with service_process("services.retrieval", SERVICE_NAME, env | extra, port, 600) as proc:
        yield f"127.0.0.1:{port}", proc


class Caller:
    """One SDK channel per replica; each call carries its tenant's key."""

    def __init__(self) -> None:
        self._clients: dict[str, RetrievalClient] = {}

    def search(self, address: str, key: str, collection: str, query: str) -> float:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = RetrievalClient(address, "", timeout=120)
        client.config.api_key = key
        started = time.perf_counter()
        client.search(collection, query, top_k=10)
        return time.perf_counter() - started

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


def bench_many_tenants(url: str, tmp: str, args: argparse.Namespace) -> list[str]:
    keys = {f"t{i:04d}": f"lpx_bench_t{i:04d}" for i in range(args.tenants)}
    settings = RetrievalSettings(data_dir=Path(tmp))
    store = RetrievalStore(make_engine(url))
    snapshots = SnapshotStore(
        open_blob_store(settings.blob_settings(Path(tmp, "snapshots"))), store
    )
    params = IndexParams()
    rng = np.random.default_rng(7)
    basis = rng.standard_normal((RANK, DIM)).astype(np.float32)
    started = time.perf_counter()
    for i, tenant in enumerate(keys):
        record = _write(
            store, tenant, "docs", IndexKind.EXACT, _embedding_like(rng, basis, args.chunks)
        )
        snapshots.save(record.pk, load_collection(store, snapshots, record, params).index)
        if i % 100 == 99:
            print(f"  {i + 1} tenants written ({time.perf_counter() - started:.0f}s)", flush=True)
    per_tenant = VectorIndex.build(
        IndexKind.EXACT, DIM, params, np.arange(args.chunks), np.zeros((args.chunks, DIM)), 1
    ).memory_bytes()
    store.engine.dispose()
    total = per_tenant * args.tenants
    budget = int(total / 2 * args.budget_share)  # each replica serves about half
    env = _env(
        tmp,
        url,
        keys,
        LORAPLEX_RETRIEVAL_MEMORY_BUDGET_BYTES=str(budget),
        LORAPLEX_RETRIEVAL_HEARTBEAT_SECONDS="1",
        LORAPLEX_RETRIEVAL_LEASE_SECONDS="5",
        LORAPLEX_RETRIEVAL_EMBEDDER_BACKEND=args.embedder_backend,
    )
    rows: list[str] = []
    with contextlib.ExitStack() as stack:
        (a, proc_a), (b, proc_b) = (stack.enter_context(_replica(env, r)) for r in ("ra", "rb"))
        caller = Caller()
        stack.callback(caller.close)
        _search = caller.search
        replicas = {"ra": a, "rb": b}
        members = [Member(r, addr) for r, addr in replicas.items()]
        tenants = list(keys)
        rand = random.Random(3)
        cold = [
            _search(rand.choice([a, b]), keys[t], "docs", rand.choice(QUERIES)) for t in tenants
        ]
        working = tenants[: max(2, int(args.tenants * args.budget_share / 4))]
        for t in working:
            _search(a, keys[t], "docs", QUERIES[0])
        warm = [
            _search(rand.choice([a, b]), keys[t], "docs", rand.choice(QUERIES))
            for t in (rand.choice(working) for _ in range(args.queries))
        ]
        rss = {r: _rss_mib(p.pid) for r, p in (("ra", proc_a), ("rb", proc_b))}  # type: ignore[attr-defined]
        (c50, c99), (w50, w99) = _percentiles(cold), _percentiles(warm)
        # Failover: SIGKILL rb; its tenants must be served through ra.
        moved = [t for t in tenants if rendezvous(t, members)[0].id == "rb"]
        sample = rand.sample(moved, min(len(moved), args.failover_sample))
        proc_b.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
        killed = time.perf_counter()
        proc_b.wait()  # type: ignore[attr-defined]
        pending = set(sample)
        while pending:
            for t in list(pending):
                with contextlib.suppress(LoraplexClientError):
                    _search(a, keys[t], "docs", QUERIES[1])
                    pending.discard(t)
        failover = time.perf_counter() - killed
    gib = total / 2**30
    rows += [
        f"| many tenants: {args.tenants} x {args.chunks} chunks (exact), 2 replicas | index"
        f" memory {gib:.2f} GiB in all, budget {budget / 2**20:.0f} MiB per replica"
        f" ({args.budget_share:.0%} of its share) | |",
        f"| RSS per replica after the runs | ra {rss['ra']:.0f} MiB, rb {rss['rb']:.0f} MiB"
        " (model and process included) | |",
        f"| cold first search, each tenant once (load + embed + search, gRPC) | p50 {c50:.1f} /"
        f" p99 {c99:.1f} ms | goal p99 <= 1000 ms |",
        f"| warm search, {len(working)} tenants, {args.queries} calls (gRPC) | p50 {w50:.1f} /"
        f" p99 {w99:.1f} ms | goal p99 <= 20 ms |",
        f"| SIGKILL of rb: {len(sample)} of its {len(moved)} tenants served again via ra |"
        f" {failover:.2f} s | goal <= 15 s |",
    ]
    return rows


def bench_big(url: str, tmp: str, args: argparse.Namespace) -> list[str]:
    keys = {"big": "lpx_bench_big"}
    settings = RetrievalSettings(data_dir=Path(tmp))
    store = RetrievalStore(make_engine(url))
    snapshots = SnapshotStore(
        open_blob_store(settings.blob_settings(Path(tmp, "snapshots"))), store
    )
    vectors = _big_vectors(args.big)
    started = time.perf_counter()
    record = _write(store, "big", "big", IndexKind.HNSW, vectors)
    written = time.perf_counter() - started
    print(f"  {args.big} chunks written in {written:.0f}s ({args.big / written:.0f}/s)", flush=True)
    ids = store.chunk_ids(record.pk)
    params = IndexParams.from_settings(settings)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    index = VectorIndex.build(IndexKind.HNSW, DIM, params, ids, vectors, record.revision)
    build = time.perf_counter() - started
    print(f"  HNSW built in {build:.0f}s", flush=True)
    # Recall@10 against brute force (truths are positions in `vectors`; ids are the store's).
    queries, truths = _recall_queries(vectors)
    hits = sum(
        len({int(ids[p]) for p in truth} & set(index.search(query, 10)[1].tolist()))
        for query, truth in zip(queries, truths, strict=True)
    )
    recall = hits / (10 * len(queries))
    print(f"  recall@10 {recall:.3f}", flush=True)
    memory = index.memory_bytes() / 2**20
    del vectors  # the snapshot's serialization and the replica's load need the room
    snapshot_bytes = snapshots.save(record.pk, index)
    store.engine.dispose()
    del index
    print(f"  snapshot saved: {snapshot_bytes / 2**20:.0f} MiB", flush=True)
    env = _env(tmp, url, keys, LORAPLEX_RETRIEVAL_EMBEDDER_BACKEND=args.embedder_backend)
    with _replica(env) as (address, proc):
        caller = Caller()
        _search = caller.search
        cold = _search(address, keys["big"], "big", QUERIES[0])
        rand = random.Random(4)
        warm = [
            _search(address, keys["big"], "big", rand.choice(QUERIES)) for _ in range(args.queries)
        ]
        rss = _rss_mib(proc.pid)  # type: ignore[attr-defined]
        caller.close()
    w50, w99 = _percentiles(warm)
    ef = settings.hnsw_ef_search or f"{auto_ef_search(args.big)} (by size)"
    return [
        f"| one big collection: {args.big} chunks, HNSW M={settings.hnsw_m}"
        f" efC={settings.hnsw_ef_construction} efS={ef} | written to"
        f" PostgreSQL in {written:.0f} s | |",
        f"| HNSW build ({os.cpu_count()} threads) | {build:.1f} s | |",
        f"| index memory / snapshot / replica RSS | {memory:.0f} MiB /"
        f" {snapshot_bytes / 2**20:.0f} MiB / {rss:.0f} MiB | |",
        f"| cold first search (snapshot load + search) | {cold * 1000:.0f} ms | |",
        f"| warm search, {args.queries} calls (gRPC) | p50 {w50:.1f} / p99 {w99:.1f} ms | |",
        f"| recall@10 vs brute force (200 queries) | {recall:.3f} | goal >= 0.95 |",
    ]


def _big_vectors(n: int) -> np.ndarray:
    """bench_big's vectors: the same seed and recipe for every size."""
    rng = np.random.default_rng(11)
    return _embedding_like(rng, rng.standard_normal((RANK, DIM)).astype(np.float32), n)


def _recall_queries(vectors: np.ndarray, count: int = 200) -> tuple[np.ndarray, list[set[int]]]:
    """bench_big's queries: near stored vectors, with brute-force top-10 by argpartition."""
    qrng = np.random.default_rng(5)
    queries = []
    truths = []
    for position in qrng.choice(len(vectors), size=count, replace=False):
        query = vectors[position] + qrng.standard_normal(DIM).astype(np.float32) * 0.02
        query /= np.linalg.norm(query)
        queries.append(query)
        truths.append(set(np.argpartition(-(vectors @ query), 10)[:10].tolist()))
    return np.asarray(queries, dtype=np.float32), truths


def _sweep_index(
    n: int, vectors: np.ndarray, params: IndexParams, cache: Path | None
) -> tuple[VectorIndex, float | None]:
    """The HNSW graph over `vectors` built by the service's `VectorIndex.build`, or read
    from the snapshot an earlier run left in `cache` (build time None then)."""
    path = None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        path = cache / f"hnsw-{n}-m{params.hnsw_m}-efc{params.ef_construction}.npz"
        if path.exists():
            index = VectorIndex.from_bytes(path.read_bytes(), params)
            if index is not None:
                return index, None
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    index = VectorIndex.build(IndexKind.HNSW, DIM, params, np.arange(n), vectors, 1)
    seconds = time.perf_counter() - started
    if path is not None:
        path.with_suffix(".tmp").write_bytes(index.to_bytes())
        path.with_suffix(".tmp").rename(path)
    return index, seconds


def bench_sweep(args: argparse.Namespace) -> None:
    """recall@10 and single-query latency per efSearch over one graph per size.

    Each query is searched at every efSearch in turn (inner loop), so load changes on a
    shared machine hit every row alike, after one untimed search at the widest beam so
    that no row pays for paging the graph in; the ratio is to the efSearch=96 row."""
    sizes = [int(x) for x in args.sweep_sizes.split(",")]
    efs = [int(x) for x in args.sweep_ef.split(",")]
    if 96 not in efs:
        efs.insert(0, 96)
    cache = Path(args.sweep_cache) if args.sweep_cache else None
    tables: list[str] = []
    for n in sizes:
        load = os.getloadavg()
        vectors = _big_vectors(n)
        base = IndexParams(hnsw_m=args.sweep_m, ef_construction=args.sweep_ef_construction)
        index, build = _sweep_index(n, vectors, base, cache)
        built = "read from cache" if build is None else f"built in {build:.0f} s"
        print(f"  {n} vectors: HNSW {built}", flush=True)
        queries, truths = _recall_queries(vectors)
        del vectors
        faiss.omp_set_num_threads(1)  # searches run on one thread, as in the service
        params: dict[str, IndexParams] = {str(ef): replace(base, ef_search=ef) for ef in efs}
        params[f"default: {auto_ef_search(n)} by size"] = replace(base, ef_search=None)
        hits = dict.fromkeys(params, 0)
        times: dict[str, list[float]] = {name: [] for name in params}
        widest = replace(base, ef_search=max(max(efs), auto_ef_search(n)))
        for query, truth in zip(queries, truths, strict=True):
            # Untimed, at the widest beam: pages in the part of the graph this query
            # visits, so the first timed row (efSearch 64) does not pay for it alone.
            index.params = widest
            index.search(query, 10)
            for name, row in params.items():
                index.params = row
                started = time.perf_counter()
                found = index.search(query, 10)[1]
                times[name].append(time.perf_counter() - started)
                hits[name] += len(truth & set(found.tolist()))
        p50_96 = _percentiles(times["96"])[0]
        lines = [
            f"\n{n:,} vectors, HNSW M={base.hnsw_m} efConstruction={base.ef_construction}"
            f" ({built}), {len(queries)} queries, load average at start"
            f" {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}",
            "| efSearch | recall@10 | p50 ms | p99 ms | p50 / efSearch 96 |",
            "|---|---|---|---|---|",
        ]
        for name in params:
            p50, p99 = _percentiles(times[name])
            recall = hits[name] / (10 * len(queries))
            lines.append(f"| {name} | {recall:.3f} | {p50:.2f} | {p99:.2f} | {p50 / p50_96:.2f}x |")
        print("\n".join(lines), flush=True)
        tables += lines
        del index
    print(
        f"\nefSearch sweep: {platform.machine()}, {os.cpu_count()} CPUs, top_k=10, one search"
        " thread, synthetic vectors (rank-48 structure in 384-d, bench_big's recipe)"
    )
    print("\n".join(tables))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    #: Each replica's budget as a share of the index memory of the tenants it serves.
    parser.add_argument("--budget-share", type=float, default=0.5)
    parser.add_argument("--failover-sample", type=int, default=20)
    parser.add_argument("--embedder-backend", default="torch", choices=["torch", "onnx-int8"])
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-tenants", action="store_true")
    parser.add_argument("--skip-write", action="store_true")
    parser.add_argument("--write-rounds", type=int, default=3)
    #: efSearch sweep (in-process, no PostgreSQL): sizes to build, efSearch values to try.
    parser.add_argument("--sweep-sizes", default="")
    parser.add_argument("--sweep-ef", default="64,96,128,192,256,384,512")
    parser.add_argument("--sweep-m", type=int, default=IndexParams.hnsw_m)
    parser.add_argument("--sweep-ef-construction", type=int, default=IndexParams.ef_construction)
    #: Folder for built graphs (the index's own snapshot bytes), so a rerun reads them.
    parser.add_argument("--sweep-cache", default="")
    args = parser.parse_args()
    if args.sweep_sizes:
        bench_sweep(args)
        return
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="retrieval-scale-") as tmp:
        if not args.skip_write:
            with postgres_server() as url:
                rows += bench_write(url, args)
                print(rows[-1], flush=True)
        if not args.skip_tenants:
            with postgres_server() as url:
                rows += bench_many_tenants(url, tmp, args)
        if not args.skip_big:
            with postgres_server() as url:
                rows += bench_big(url, tmp, args)
    print(
        f"\nretrieval scale bench: {platform.machine()}, {os.cpu_count()} CPUs, top_k=10,"
        f" query embedder {args.embedder_backend},"
        " synthetic vectors (rank-48 structure in 384-d), real query embeddings, PostgreSQL,"
        " snapshots in the local-files BlobStore"
    )
    print("| measure | result | goal |")
    print("|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
