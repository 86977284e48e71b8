"""Noisy-neighbour benchmark: one tenant's large ingest against another tenant's searches.

A real `python -m services.retrieval` on loopback, two tenants:
- globex holds a small collection and searches it, first with the server idle, then
  while acme ingests one large document (0.9M characters of English by default);
- globex also upserts a small batch, idle and during acme's ingest (fairness of the
  ingest lane);
- acme then sends a 1M-character CJK document, which the token limit refuses; the
  table shows how long the refusal took and the server's RSS before and after.

The ratio column is during / idle, from the same server process. The goal is a
search p50 ratio within 3.

    .venv/bin/python -m bench.retrieval_neighbour_bench [--doc-chars 900000] [--searches 200]
    # against another checkout (e.g. the code before the fix), same client:
    .venv/bin/python -m bench.retrieval_neighbour_bench --server-root /path/to/checkout
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.retrieval_bench import VOCABULARY
from loraplex.client.base import LoraplexClientError
from loraplex.client.retrieval import RetrievalClient
from services.common.probes import free_port, wait_until_serving
from services.common.testing import TEST_TENANT_KEYS
from services.retrieval.app import SERVICE_NAME

ROOT = Path(__file__).resolve().parents[1]
WORDS = VOCABULARY.split()
CJK = "東京都は日本の首都であり多くの人々が住んでいます経済と文化の中心地です品質管理と安全基準"


def english(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 18))) + ". "
        out.append(sentence.capitalize())
        size += len(sentence)
    return "".join(out)[:chars]


def cjk(rng: random.Random, chars: int) -> str:
    return "".join(rng.choice(CJK) for _ in range(chars))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def searches(client: RetrievalClient, n: int, until: threading.Event | None = None) -> list[float]:
    """Sequential searches with a short think time; stops early when `until` is set."""
    rng = random.Random(3)
    times: list[float] = []
    for _ in range(n):
        if until is not None and until.is_set():
            break
        query = " ".join(rng.choice(WORDS) for _ in range(6))
        started = time.perf_counter()
        client.search("kb", query, top_k=5)
        times.append(time.perf_counter() - started)
        time.sleep(0.05)
    return times


def small_upsert(client: RetrievalClient, tag: str) -> float:
    rng = random.Random(tag)
    docs = [{"id": f"{tag}-{i}", "text": english(rng, 600)} for i in range(5)]
    started = time.perf_counter()
    client.upsert("kb", docs)
    return time.perf_counter() - started


def start_server(root: Path, data_dir: str, port: int) -> subprocess.Popen[bytes]:
    keys = ",".join(f"{t}:{k}" for t, k in TEST_TENANT_KEYS.items())
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "LORAPLEX_DATA_DIR": data_dir,
        "LORAPLEX_API_KEYS": keys,
        "LORAPLEX_RETRIEVAL_PORT": str(port),
        "LORAPLEX_RETRIEVAL_METRICS_PORT": "0",
        "LORAPLEX_LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen([sys.executable, "-m", "services.retrieval"], cwd=root, env=env)
    wait_until_serving(f"127.0.0.1:{port}", SERVICE_NAME, 300, process)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc-chars", type=int, default=900_000)
    parser.add_argument("--cjk-chars", type=int, default=1_000_000, help="0 skips this row")
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--server-root", type=Path, default=ROOT)
    args = parser.parse_args()

    rng = random.Random(1)
    big = english(rng, args.doc_chars)
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="neighbour-bench-") as tmp:
        port = free_port()
        server = start_server(args.server_root, tmp, port)
        target = f"127.0.0.1:{port}"
        try:
            with (
                RetrievalClient(target, TEST_TENANT_KEYS["acme"], timeout=3600) as acme,
                RetrievalClient(target, TEST_TENANT_KEYS["globex"], timeout=600) as globex,
            ):
                globex.create_collection("kb")
                globex.upsert("kb", [{"id": f"k{i}", "text": english(rng, 800)} for i in range(30)])
                acme.create_collection("big")
                searches(globex, 20)  # warm-up
                idle = searches(globex, args.searches)
                idle_upsert = small_upsert(globex, "idle")
                rss_before = rss_mb(server.pid)

                embedding = threading.Event()
                finished = threading.Event()
                outcome: dict[str, float] = {}

                def ingest() -> None:
                    started = time.perf_counter()

                    def progress(done: int, total: int, written: int) -> None:
                        if done > 0:
                            embedding.set()

                    try:
                        acme.upsert("big", [{"id": "big", "text": big}], progress_cb=progress)
                        outcome["seconds"] = time.perf_counter() - started
                    finally:
                        embedding.set()
                        finished.set()

                worker = threading.Thread(target=ingest, daemon=True)
                worker.start()
                embedding.wait()
                busy = searches(globex, args.searches, until=finished)
                busy_upsert = small_upsert(globex, "busy") if not finished.is_set() else None
                ingest_running = not finished.is_set()
                worker.join()
                rss_after_ingest = rss_mb(server.pid)

                cjk_result, cjk_seconds, rss_after_cjk = "skipped", 0.0, rss_after_ingest
                if args.cjk_chars:
                    started = time.perf_counter()
                    try:
                        acme.upsert("big", [{"id": "cjk", "text": cjk(rng, args.cjk_chars)}])
                        cjk_result = "accepted"
                    except LoraplexClientError as exc:  # a refusal is the expected outcome
                        cjk_result = exc.code.name
                    cjk_seconds = time.perf_counter() - started
                    rss_after_cjk = rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=60)

    (i50, i99), (b50, b99) = percentiles(idle), percentiles(busy)
    rows.append(
        f"| globex search p50 | {i50:.1f} ms | {b50:.1f} ms | {b50 / i50:.2f} |"
        f" {len(idle)} / {len(busy)} searches |"
    )
    rows.append(f"| globex search p99 | {i99:.1f} ms | {b99:.1f} ms | {b99 / i99:.2f} | |")
    if busy_upsert is not None:
        rows.append(
            f"| globex upsert of 5 small docs | {idle_upsert * 1000:.0f} ms |"
            f" {busy_upsert * 1000:.0f} ms | {busy_upsert / idle_upsert:.2f} |"
            f" acme's ingest still running after it: {ingest_running} |"
        )
    rows.append(
        f"| acme ingest of {args.doc_chars} chars (English) | | {outcome.get('seconds', 0):.0f} s"
        f" | | server RSS {rss_before:.0f} -> {rss_after_ingest:.0f} MB |"
    )
    rows.append(
        f"| acme upsert of {args.cjk_chars} CJK chars | | {cjk_seconds:.1f} s | | {cjk_result};"
        f" server RSS after {rss_after_cjk:.0f} MB |"
    )
    print(
        f"\nnoisy-neighbour bench: {platform.machine()}, {os.cpu_count()} CPUs,"
        f" server code from {args.server_root}"
    )
    print("| measure | idle | during acme's ingest | ratio | notes |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
