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
- Embedders: the int8 ONNX Runtime backend (`onnx-int8`) against the fp32
  sentence-transformers reference (`torch`), in this process on the same texts:
  document chunks/s, query p50/p99, and recall@10 of int8 against fp32 (each embeds
  the ingest chunks and the bench's queries; top-10 by inner product). The service's
  ingest row is run once per backend (a server process each).

The server runs as its own process (`python -m services.retrieval`), as deployed.

    /work/heavy .venv/bin/python -m bench.retrieval_bench [--sizes 10000 100000] [--queries 200]
    /work/heavy .venv/bin/python -m bench.retrieval_bench --embedders-only   # int8 vs fp32 rows
"""

from __future__ import annotations

import argparse
import json
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
from services.common.blobstore import open_blob_store
from services.common.db import make_engine
from services.common.model_packages import packaged_model_dir
from services.common.probes import free_port
from services.common.testing import TEST_TENANT_KEYS, service_process
from services.retrieval.app import SERVICE_NAME
from services.retrieval.chunking import Chunk, chunk_text
from services.retrieval.embedder import Embedder, TextEmbedder
from services.retrieval.index import IndexParams, VectorIndex
from services.retrieval.live import load_collection
from services.retrieval.onnx_embedder import OnnxEmbedder
from services.retrieval.records import CollectionRecord, DocumentInput, IndexKind, PreparedDocument
from services.retrieval.settings import DEFAULT_EMBEDDING_MODEL, RetrievalSettings
from services.retrieval.snapshots import SnapshotStore
from services.retrieval.store import RetrievalStore

VOCABULARY = (
    "pump valve seal bearing turbine grid voltage sensor firmware latency cache index query"
    " tenant invoice contract clause warranty shipment pallet forklift freezer compressor"
    " airflow filter pressure gauge calibration manual safety torque bolt flange gasket"
)
DIM = 384
ROOT = Path(__file__).resolve().parents[1]
HANDBOOK = ROOT / "demo" / "handbook"
QUESTIONS = ROOT / "demo" / "eval" / "questions.jsonl"
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
    store: RetrievalStore,
    snapshots: SnapshotStore,
    settings: RetrievalSettings,
    kind: IndexKind,
    size: int,
    seed: int,
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
    params = IndexParams.from_settings(settings)
    index = load_collection(store, snapshots, record, params).index
    snapshots.save(record.pk, index)
    return index


def _corpus(docs: int) -> list[dict[str, str]]:
    rng = random.Random(1)
    return [{"id": f"d{i}", "text": _text(rng, 600)} for i in range(docs)]


def _chunks(embedder: TextEmbedder, corpus: list[dict[str, str]], size: int, overlap: int):
    return [
        c.text for d in corpus for c in chunk_text(d["text"], embedder.token_offsets, size, overlap)
    ]


def bench_ingest(
    client: RetrievalClient, embedder: TextEmbedder, docs: int, backend: str
) -> tuple[str, float]:
    """The service's ingest against `embedder` (the same backend) encoding the same chunks."""
    corpus = _corpus(docs)
    made = client.create_collection(f"ingest-{backend}")
    texts = _chunks(embedder, corpus, made.chunk_size_tokens, made.chunk_overlap_tokens)
    embedder.encode(texts[:64], TORCH_THREADS)  # warm-up
    started = time.perf_counter()
    embedder.encode(texts, TORCH_THREADS)
    raw = len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    final = client.upsert(made.name, corpus, batch_size=16)
    service = final.chunks_total / (time.perf_counter() - started)
    assert final.chunks_total == len(texts)
    row = (
        f"| ingest, {backend} ({len(texts)} real chunks of {made.chunk_size_tokens} tokens) |"
        f" service {service:.1f} chunks/s | raw encode {raw:.1f} chunks/s |"
        f" ratio {service / raw:.2f} |"
    )
    return row, service


def bench_embedders(fp32: Embedder, int8: OnnxEmbedder, docs: int, queries: int) -> list[str]:
    """int8 against fp32 in this process: chunks/s in the ingest lane's slices of 8,
    single-query latency, and recall@10 of int8 retrieval against fp32 retrieval."""
    texts = _chunks(fp32, _corpus(docs), 200, 32)
    rng = random.Random(2)
    questions = [_text(rng, 8) for _ in range(queries)]
    embedders = {"fp32": fp32, "int8": int8}
    rates, latencies, vectors = {}, {}, {}
    for name, embedder in embedders.items():
        embedder.encode(texts[:16], TORCH_THREADS)
        started = time.perf_counter()
        parts = [embedder.encode(texts[i : i + 8], TORCH_THREADS) for i in range(0, len(texts), 8)]
        rates[name] = len(texts) / (time.perf_counter() - started)
        query_vectors, latencies[name] = _one_query_at_a_time(embedder, questions)
        vectors[name] = (np.vstack(parts), query_vectors)
    recall = _recall(*vectors["fp32"], *vectors["int8"])
    agreement = float(np.mean(np.sum(vectors["fp32"][0] * vectors["int8"][0], axis=1)))
    # Real text too: the demo handbook in 64-token chunks, asked the eval set's questions.
    handbook = [{"id": p.stem, "text": p.read_text()} for p in sorted(HANDBOOK.glob("*.md"))]
    passages = _chunks(fp32, handbook, 64, 16)
    asked = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines()]
    real = [
        (e.encode(passages, TORCH_THREADS), e.encode_query(asked, TORCH_THREADS))
        for e in embedders.values()
    ]
    real_recall = _recall(*real[0], *real[1])
    # One query at a time again, on questions people asked: shorter than the word salad above.
    asked_latency = {name: _one_query_at_a_time(e, asked)[1] for name, e in embedders.items()}
    return [
        f"| embed documents ({len(texts)} chunks of 200 tokens, slices of 8) | int8"
        f" {rates['int8']:.1f} chunks/s | fp32 {rates['fp32']:.1f} chunks/s |"
        f" ratio {rates['int8'] / rates['fp32']:.2f} (goal >= 2.5) |",
        _query_row(f"the bench's {queries} synthetic ones", fp32, questions, latencies),
        _query_row(f"demo/eval's {len(asked)} questions", fp32, asked, asked_latency),
        f"| recall@10, int8 vs fp32: the bench's {queries} queries over its {len(texts)}"
        f" chunks (one 40-word vocabulary: near-ties) | {recall:.3f} | mean cosine"
        f" int8·fp32 {agreement:.3f} | goal >= 0.95 |",
        f"| recall@10, int8 vs fp32: demo/eval's {len(asked)} questions over the demo"
        f" handbook's {len(passages)} chunks of 64 tokens | {real_recall:.3f} | | goal >= 0.95 |",
    ]


def _one_query_at_a_time(
    embedder: Embedder | OnnxEmbedder, questions: list[str]
) -> tuple[np.ndarray, tuple[float, float]]:
    """Each question embedded alone, as a search does: the vectors and p50/p99 in ms."""
    times, vectors = [], []
    for question in questions:
        started = time.perf_counter()
        vectors.append(embedder.encode_query([question], TORCH_THREADS)[0])
        times.append(time.perf_counter() - started)
    return np.vstack(vectors), _percentiles(times)


def _query_row(
    what: str, fp32: Embedder, questions: list[str], ms: dict[str, tuple[float, float]]
) -> str:
    tokens = np.mean([len(fp32.token_offsets(q)) for q in questions])
    (f50, f99), (i50, i99) = ms["fp32"], ms["int8"]
    return (
        f"| embed one query: {what} (mean {tokens:.0f} tokens) | int8 p50 {i50:.2f} / p99"
        f" {i99:.2f} ms | fp32 p50 {f50:.2f} / p99 {f99:.2f} ms | ratio {f50 / i50:.2f}"
        " (goal int8 p50 <= 3 ms) |"
    )


def _recall(docs: np.ndarray, queries: np.ndarray, docs2: np.ndarray, queries2: np.ndarray):
    """Mean share of the reference's top-10 (first pair) that the second pair finds."""
    first = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    second = np.argsort(-(queries2 @ docs2.T), axis=1)[:, :10]
    pairs = zip(first, second, strict=True)
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in pairs]))


def bench_search(
    client: RetrievalClient, embedder: TextEmbedder, name: str, index: VectorIndex, queries: int
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
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest-docs", type=int, default=60)
    parser.add_argument(
        "--backends", nargs="+", default=["torch", "onnx-int8"], choices=["torch", "onnx-int8"]
    )
    parser.add_argument(
        "--embedders-only",
        action="store_true",
        help="only the in-process int8 vs fp32 embedder rows: no service, no search rows",
    )
    args = parser.parse_args()

    embedder = Embedder(DEFAULT_EMBEDDING_MODEL, packaged_model_dir())
    # The service's own thread settings, on both sides: one torch thread keeps figures
    # steady on a small, shared machine (and the ratios compare like with like).
    faiss.omp_set_num_threads(RetrievalSettings().faiss_threads)
    torch.set_num_threads(TORCH_THREADS)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as tmp:
        onnx_cache = Path(tmp) / "onnx"
        embedders: dict[str, TextEmbedder] = {"torch": embedder}
        if "onnx-int8" in args.backends:
            int8 = OnnxEmbedder(DEFAULT_EMBEDDING_MODEL, packaged_model_dir(), onnx_cache)
            embedders["onnx-int8"] = int8
            rows += bench_embedders(embedder, int8, args.ingest_docs, args.queries)
        if args.embedders_only:
            _print(rows)
            return
        settings = RetrievalSettings(data_dir=Path(tmp))
        store = RetrievalStore(make_engine(settings.resolved_database_url()))
        snapshots = SnapshotStore(open_blob_store(settings.snapshot_blob_settings()), store)
        indexes: dict[tuple[IndexKind, int], VectorIndex] = {}
        for size in args.sizes:
            for kind in IndexKind:
                started = time.perf_counter()
                indexes[(kind, size)] = _synthetic(
                    store, snapshots, settings, kind, size, seed=size
                )
                print(f"prepared {kind.value}-{size} in {time.perf_counter() - started:.0f}s")
        store.engine.dispose()

        ingest: dict[str, float] = {}
        for backend in args.backends:
            port = free_port()
            env = {
                "LORAPLEX_DATA_DIR": tmp,
                "LORAPLEX_API_KEYS": f"acme:{TEST_TENANT_KEYS['acme']}",
                "LORAPLEX_RETRIEVAL_PORT": str(port),
                "LORAPLEX_RETRIEVAL_METRICS_PORT": "0",
                "LORAPLEX_LOG_LEVEL": "WARNING",
                "LORAPLEX_RETRIEVAL_TORCH_THREADS": str(TORCH_THREADS),
                "LORAPLEX_RETRIEVAL_EMBEDDER_BACKEND": backend,
                "LORAPLEX_RETRIEVAL_ONNX_CACHE_DIR": str(onnx_cache),
            }
            with (
                service_process("services.retrieval", SERVICE_NAME, env, port, timeout=300),
                RetrievalClient(
                    f"127.0.0.1:{port}", TEST_TENANT_KEYS["acme"], timeout=600
                ) as client,
            ):
                row, ingest[backend] = bench_ingest(
                    client, embedders[backend], args.ingest_docs, backend
                )
                rows.append(row)
                if backend != args.backends[0]:
                    continue
                for size in args.sizes:
                    for kind in IndexKind:
                        rows.append(
                            bench_search(
                                client, embedder, f"{kind.value}-{size}", indexes[(kind, size)],
                                args.queries,
                            )
                        )  # fmt: skip
        if len(ingest) == 2:
            ratio = ingest["onnx-int8"] / ingest["torch"]
            rows.append(f"| service ingest, onnx-int8 / torch | {ratio:.2f} | | goal >= 2.5 |")
        for size in args.sizes:
            recall = recall_at_10(
                indexes[(IndexKind.EXACT, size)], indexes[(IndexKind.HNSW, size)], 200, size
            )
            rows.append(f"| recall@10 HNSW vs exact, {size} synthetic vectors | {recall:.3f} | | |")

    _print(rows)


def _print(rows: list[str]) -> None:
    print(
        f"\nretrieval bench: {platform.machine()}, {os.cpu_count()} CPUs, top_k=10,"
        f" {TORCH_THREADS} torch/ONNX Runtime thread(s) in service and baseline; search/recall"
        f" rows use synthetic vectors (rank-{RANK} structure in {DIM}-d), ingest and embedder"
        " rows real text; search rows embed queries with the first backend"
    )
    print("| measure | service | baseline | ratio / notes |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
