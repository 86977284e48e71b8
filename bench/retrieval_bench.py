"""Retrieval benchmark: ingest throughput, search latency over gRPC, HNSW recall.

- Ingest: real text, real MiniLM embeddings. The service's chunks/s (gRPC stream,
  chunking, embedding, SQLite commit, index update) against sentence-transformers
  encoding the very same chunk texts in-process.
- Search: collections of 10k and 100k chunks per index kind. Their vectors are
  SYNTHETIC (unit vectors near a low-rank subspace, as embeddings are), written
  through the service's own store and index layer and loaded by the server from
  its snapshots: 100k real embeddings on 2 CPU cores would take too long. The
  query is embedded for real. p50/p99 of a gRPC SearchChunks call against the
  same work in-process (embed + FAISS) and against the bare FAISS call.
- Recall@10 of HNSW against exact search on the same vectors (queries: stored
  vectors plus noise).

The server runs as its own process (`python -m services.retrieval`), as deployed.

    .venv/bin/python -m bench.retrieval_bench [--sizes 10000 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np
import torch

from loraplex.client.retrieval import RetrievalClient
from services.common.db import make_engine
from services.common.probes import free_port
from services.common.testing import TEST_TENANT_KEYS, service_process
from services.retrieval.app import SERVICE_NAME
from services.retrieval.chunking import Chunk, chunk_text
from services.retrieval.embedder import Embedder, packaged_model_dir
from services.retrieval.index import IndexParams, VectorIndex
from services.retrieval.live import load_index
from services.retrieval.records import CollectionRecord, DocumentInput, IndexKind, PreparedDocument
from services.retrieval.settings import DEFAULT_EMBEDDING_MODEL, RetrievalSettings
from services.retrieval.store import RetrievalStore

VOCABULARY = (
    "pump valve seal bearing turbine grid voltage sensor firmware latency cache index query"
    " tenant invoice contract clause warranty shipment pallet forklift freezer compressor"
    " airflow filter pressure gauge calibration manual safety torque bolt flange gasket"
)
DIM = 384
RANK = 48
TORCH_THREADS = 1


def _text(rng: random.Random, words: int) -> str:
    vocabulary = VOCABULARY.split()
    sentences = []
    while words > 0:
        n = rng.randint(8, 18)
        sentences.append(" ".join(rng.choice(vocabulary) for _ in range(n)).capitalize() + ".")
        words -= n
    return " ".join(sentences)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _embedding_like(rng: np.random.Generator, basis: np.ndarray, n: int) -> np.ndarray:
    """Unit vectors near a RANK-dimensional subspace: uniform random 384-d vectors have no
    structure at all, which no real embedding set looks like (and which no ANN index likes)."""
    vectors = rng.standard_normal((n, RANK)).astype(np.float32) @ basis
    vectors += rng.standard_normal(vectors.shape).astype(np.float32) * 0.1
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _synthetic(
    store: RetrievalStore, settings: RetrievalSettings, kind: IndexKind, size: int, seed: int
) -> VectorIndex:
    """Writes `size` one-chunk documents with random unit vectors; snapshots the built index."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((RANK, DIM)).astype(np.float32)
    record = CollectionRecord(
        0, "acme", f"{kind.value}-{size}", DEFAULT_EMBEDDING_MODEL, DIM, kind, 200, 32,
        datetime.now(UTC), 0,
    )  # fmt: skip
    record = store.create_collection(record, max_per_tenant=100)
    for start in range(0, size, 5000):
        n = min(5000, size - start)
        vectors = _embedding_like(rng, basis, n)
        docs = [
            PreparedDocument(
                DocumentInput(f"s{start + i}", "x"),
                [Chunk(0, f"synthetic chunk {start + i}", 0, 1)],
                vectors[i : i + 1],
            )
            for i in range(n)
        ]
        store.write_documents(record, docs)
    record = store.get_collection("acme", record.name)
    params = IndexParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)
    index, _ = load_index(store, record, settings.index_dir(), params)
    index.save(settings.index_dir() / f"{record.pk}.npz")
    return index


def bench_ingest(client: RetrievalClient, embedder: Embedder, docs: int) -> list[str]:
    rng = random.Random(1)
    corpus = [{"id": f"d{i}", "text": _text(rng, 600)} for i in range(docs)]
    made = client.create_collection("ingest")
    texts = [
        c.text
        for d in corpus
        for c in chunk_text(
            d["text"], embedder.token_offsets, made.chunk_size_tokens, made.chunk_overlap_tokens
        )
    ]
    embedder.encode(texts[:64])  # warm-up
    started = time.perf_counter()
    embedder.encode(texts)
    raw = len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    final = client.upsert("ingest", corpus, batch_size=16)
    service = final.chunks_total / (time.perf_counter() - started)
    assert final.chunks_total == len(texts)
    return [
        f"| ingest ({len(texts)} real chunks of {made.chunk_size_tokens} tokens) | service"
        f" {service:.1f} chunks/s | raw encode {raw:.1f} chunks/s | ratio {service / raw:.2f} |"
    ]


def bench_search(
    client: RetrievalClient, embedder: Embedder, name: str, index: VectorIndex, queries: int
) -> str:
    rng = random.Random(2)
    texts = [_text(rng, 8) for _ in range(queries)]
    for text in texts[:10]:
        client.search(name, text, top_k=10)
    # Service first, then the in-process baseline: interleaving them would make each
    # process's spinning OpenMP threads slow the other down on a small machine.
    grpc_times, local_times, faiss_times = [], [], []
    for text in texts:
        started = time.perf_counter()
        client.search(name, text, top_k=10)
        grpc_times.append(time.perf_counter() - started)
    time.sleep(1)
    for text in texts:
        started = time.perf_counter()
        vector = embedder.encode([text])[0]
        embedded = time.perf_counter()
        index.search(vector, 10)
        done = time.perf_counter()
        local_times.append(done - started)
        faiss_times.append(done - embedded)
    (g50, g99), (l50, l99), (f50, f99) = map(_percentiles, (grpc_times, local_times, faiss_times))
    return (
        f"| search {name} (synthetic vectors) | gRPC p50 {g50:.2f} / p99 {g99:.2f} ms"
        f" | in-process embed+FAISS p50 {l50:.2f} / p99 {l99:.2f} ms (ratio {g50 / l50:.2f})"
        f" | FAISS alone p50 {f50:.3f} / p99 {f99:.3f} ms |"
    )


def recall_at_10(exact: VectorIndex, hnsw: VectorIndex, queries: int, seed: int) -> float:
    """Both collections hold the same vectors in the same order under different chunk ids,
    so results are compared by insertion position."""
    rng = np.random.default_rng(seed)
    exact_ids, hnsw_ids = np.sort(exact.live_ids()), np.sort(hnsw.live_ids())
    hits = 0
    for position in rng.choice(len(exact_ids), size=queries, replace=False):
        query = exact.vectors(exact_ids[position : position + 1])[0]
        query = query + rng.standard_normal(DIM).astype(np.float32) * 0.02
        query /= np.linalg.norm(query)
        truth = np.searchsorted(exact_ids, exact.search(query, 10)[1])
        found = np.searchsorted(hnsw_ids, hnsw.search(query, 10)[1])
        hits += len(set(truth.tolist()) & set(found.tolist()))
    return hits / (10 * queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest-docs", type=int, default=60)
    args = parser.parse_args()

    embedder = Embedder(DEFAULT_EMBEDDING_MODEL, packaged_model_dir())
    # The service's own thread settings, on both sides: one torch thread keeps figures
    # steady on a small, shared machine (and the ratios compare like with like).
    faiss.omp_set_num_threads(RetrievalSettings().faiss_threads)
    torch.set_num_threads(TORCH_THREADS)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as tmp:
        settings = RetrievalSettings(data_dir=Path(tmp))
        store = RetrievalStore(make_engine(settings.resolved_database_url()))
        indexes: dict[tuple[IndexKind, int], VectorIndex] = {}
        for size in args.sizes:
            for kind in IndexKind:
                started = time.perf_counter()
                indexes[(kind, size)] = _synthetic(store, settings, kind, size, seed=size)
                print(f"prepared {kind.value}-{size} in {time.perf_counter() - started:.0f}s")
        store.engine.dispose()

        port = free_port()
        env = {
            "LORAPLEX_DATA_DIR": tmp,
            "LORAPLEX_API_KEYS": f"acme:{TEST_TENANT_KEYS['acme']}",
            "LORAPLEX_RETRIEVAL_PORT": str(port),
            "LORAPLEX_RETRIEVAL_METRICS_PORT": "0",
            "LORAPLEX_LOG_LEVEL": "WARNING",
            "LORAPLEX_RETRIEVAL_TORCH_THREADS": str(TORCH_THREADS),
        }
        with (
            service_process("services.retrieval", SERVICE_NAME, env, port, timeout=300),
            RetrievalClient(f"127.0.0.1:{port}", TEST_TENANT_KEYS["acme"], timeout=600) as client,
        ):
            rows += bench_ingest(client, embedder, args.ingest_docs)
            for size in args.sizes:
                for kind in IndexKind:
                    rows.append(
                        bench_search(
                            client, embedder, f"{kind.value}-{size}", indexes[(kind, size)],
                            args.queries,
                        )
                    )  # fmt: skip
        for size in args.sizes:
            recall = recall_at_10(
                indexes[(IndexKind.EXACT, size)], indexes[(IndexKind.HNSW, size)], 200, size
            )
            rows.append(f"| recall@10 HNSW vs exact, {size} synthetic vectors | {recall:.3f} | | |")

    print(
        f"\nretrieval bench: {platform.machine()}, {os.cpu_count()} CPUs, top_k=10,"
        f" {TORCH_THREADS} torch thread(s) in service and baseline; search/recall rows use"
        f" synthetic vectors (rank-{RANK} structure in {DIM}-d), ingest rows real text"
    )
    print("| measure | service | baseline | ratio / notes |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
