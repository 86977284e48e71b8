"""A mixed load on a replicated suite, and the ledger that says what it was promised.

Each worker is a thread with its own SDK client on the suite's every-replica addresses,
bounded in iterations and in time. A write goes into the ledger as *acknowledged* only
when its call returned; a write whose call failed is *maybe* (it may or may not have
landed) and is never counted as lost. Reads and generations record every failure, after
whatever retrying the SDK does on its own: the test adds none.
"""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from loraplex.client import (
    InferenceClient,
    LoraplexClientError,
    RegistryClient,
    RetrievalClient,
    TrainingClient,
)
from tests.processes import alive

TENANT = "acme"
ADAPTER = f"{TENANT}/chaos"
ALIAS = "prod"
COLLECTION = "handbook"
GENERATE_METHOD = "/loraplex.inference.v1.InferenceService/GenerateText"


@dataclass
class Ledger:
    """What the load did; workers write under `lock`."""

    pushed: dict[int, str] = field(default_factory=dict)  # version → files digest
    push_failures: list[str] = field(default_factory=list)
    flips: list[tuple[int, bool]] = field(default_factory=list)  # (version, acknowledged)
    docs: dict[str, str] = field(default_factory=dict)  # id → text
    maybe_docs: set[str] = field(default_factory=set)
    searches: int = 0
    search_failures: list[str] = field(default_factory=list)
    generations: int = 0
    generation_failures: list[str] = field(default_factory=list)
    answered_by_version: Counter = field(default_factory=Counter)  # adapter ref → answers
    jobs: dict[str, str] = field(default_factory=dict)  # job id → adapter name
    job_failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def files_digest(folder: Path) -> str:
    """The adapter's weights, as pushed and as pulled back."""
    return hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()


class Load:
    """The workers, started together and stopped together."""

    def __init__(
        self, addresses: dict[str, str], api_key: str, ledger: Ledger, deadline: float
    ) -> None:
        self.addresses = addresses
        self.api_key = api_key
        self.ledger = ledger
        self.deadline = deadline
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.crashes: list[str] = []

    def client(self, kind: type):
        return kind(address=self.addresses[kind.service], api_key=self.api_key)

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def spawn(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except Exception as error:  # a worker bug, not a service failure: fail the test
                self.crashes.append(f"{name}: {type(error).__name__}: {error}")

        thread = threading.Thread(target=run, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def join(self, timeout: float = 900.0) -> None:
        self.stop.set()
        end = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(1.0, end - time.monotonic()))
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"load workers still running after {timeout:.0f}s: {alive}"

    # -- the workers --------------------------------------------------------------------

    def pusher(self, adapters: list[Path], limit: int, pause: float) -> None:
        """Pushes new versions of tenant/chaos from a few prepared adapter folders."""
        with self.client(RegistryClient) as registry:
            for i in range(limit):
                if not self.running():
                    return
                source = adapters[i % len(adapters)]
                try:
                    version = registry.push(ADAPTER, source, description=f"chaos push {i}")
                except LoraplexClientError as error:
                    with self.ledger.lock:
                        self.ledger.push_failures.append(str(error))
                else:
                    digest = files_digest(source)
                    with self.ledger.lock:
                        self.ledger.pushed[version.version] = digest
                time.sleep(pause)

    def flipper(self, limit: int, pause: float) -> None:
        """Moves the alias among acknowledged versions; inference pre-loads each flip."""
        with self.client(RegistryClient) as registry:
            for i in range(limit):
                if not self.running():
                    return
                with self.ledger.lock:
                    versions = sorted(self.ledger.pushed)
                if versions:
                    target = versions[(i * 7) % len(versions)]
                    try:
                        registry.set_alias(ADAPTER, ALIAS, target)
                        acknowledged = True
                    except LoraplexClientError:
                        acknowledged = False
                    with self.ledger.lock:
                        self.ledger.flips.append((target, acknowledged))
                time.sleep(pause)

    def ingester(self, limit: int, pause: float) -> None:
        """Upserts one small document per call, each findable by its own metadata."""
        with self.client(RetrievalClient) as retrieval:
            for i in range(limit):
                if not self.running():
                    return
                doc_id = f"chaos-{i}"
                text = f"Chaos note {i}: parcel {i} ships from dock {i % 7} on weekday {i % 5}."
                doc = {"id": doc_id, "text": text, "metadata": {"n": str(i)}}
                try:
                    retrieval.upsert(COLLECTION, [doc], timeout=300)
                except LoraplexClientError:
                    with self.ledger.lock:
                        self.ledger.maybe_docs.add(doc_id)
                else:
                    with self.ledger.lock:
                        self.ledger.docs[doc_id] = text
                time.sleep(pause)

    def searcher(self, limit: int, pause: float) -> None:
        with self.client(RetrievalClient) as retrieval:
            for i in range(limit):
                if not self.running():
                    return
                try:
                    retrieval.search(COLLECTION, f"which dock ships parcel {i}?", top_k=3)
                except LoraplexClientError as error:
                    with self.ledger.lock:
                        self.ledger.search_failures.append(str(error))
                else:
                    with self.ledger.lock:
                        self.ledger.searches += 1
                time.sleep(pause)

    def generator(self, limit: int, pause: float) -> None:
        """Generations with the aliased adapter and RAG; every one must be answered."""
        with self.client(InferenceClient) as inference:
            for i in range(limit):
                if not self.running():
                    return
                try:
                    result = inference.generate(
                        "Who approves trips abroad?", adapter=f"{ADAPTER}@{ALIAS}",
                        collection=COLLECTION, top_k=2, max_tokens=8, seed=i,
                    )  # fmt: skip
                except LoraplexClientError as error:
                    with self.ledger.lock:
                        self.ledger.generation_failures.append(str(error))
                else:
                    with self.ledger.lock:
                        self.ledger.generations += 1
                        self.ledger.answered_by_version[result.adapter_ref] += 1
                time.sleep(pause)

    def trainer(self, dataset_id: str, limit: int, job_seconds: float) -> None:
        """Training jobs one after another, each publishing to an adapter of its own."""
        with self.client(TrainingClient) as training:
            for i in range(limit):
                if not self.running():
                    return
                name = f"{TENANT}/trained-{i}"
                try:
                    job = training.create_job(
                        "tiny", [dataset_id], adapter_name=name,
                        hyperparameters={"max_steps": 30, "batch_size": 4,
                                         "checkpoint_interval_steps": 5},
                    )  # fmt: skip
                except LoraplexClientError as error:
                    with self.ledger.lock:
                        self.ledger.job_failures.append(str(error))
                    continue
                with self.ledger.lock:
                    self.ledger.jobs[job.id] = name
                wait_for_job(training, job.id, time.monotonic() + job_seconds)


def wait_for_job(training: TrainingClient, job_id: str, deadline: float):
    """Polls (a stream would break with each killed replica) until the job ends or time's up."""
    from loraplex.client.training import FINAL_STATES

    job = None
    while time.monotonic() < deadline:
        try:
            job = training.get_job(job_id)
        except LoraplexClientError:
            job = None
        if job is not None and job.state in FINAL_STATES:
            return job
        time.sleep(2)
    return job


class RequestCounts:
    """Per-replica totals of one RPC, scraped from each replica's /metrics and summed over
    the replica's lives (a restarted process starts its counters at zero)."""

    def __init__(self, urls: list[str], method: str, interval: float = 1.0) -> None:
        self.urls = urls
        self.method = method
        self.interval = interval
        self.before = [0.0] * len(urls)
        self.last = [0.0] * len(urls)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="metrics", daemon=True)

    def scrape(self, url: str) -> float | None:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                text = reply.read().decode()
        except OSError:
            return None
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if sample.name == "loraplex_rpc_total" and labels.get("method") == self.method:
                    total += sample.value if labels.get("code") == "OK" else 0.0
        return total

    def poll(self) -> None:
        for i, url in enumerate(self.urls):
            value = self.scrape(url)
            if value is None:
                continue
            if value < self.last[i]:  # a new life of this replica
                self.before[i] += self.last[i]
            self.last[i] = value

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            self.poll()

    def start(self) -> None:
        self.thread.start()

    def totals(self) -> list[float]:
        self.stop.set()
        self.thread.join(timeout=30)
        self.poll()
        return [b + last for b, last in zip(self.before, self.last, strict=True)]


def job_events(training: TrainingClient, job_id: str) -> Counter:
    """How many events of each kind the job's history holds."""
    kinds: Counter = Counter()
    for event in training.events(job_id, follow=False):
        kinds[event.WhichOneof("event")] += 1
    return kinds


def describe(ledger: Ledger) -> dict[str, object]:
    """A short summary for the test's failure messages and its log."""
    failures: dict[str, int] = defaultdict(int)
    for message in ledger.generation_failures:
        failures[message.split(":")[0]] += 1
    return {
        "pushed": len(ledger.pushed),
        "push_failures": len(ledger.push_failures),
        "flips": len(ledger.flips),
        "docs": len(ledger.docs),
        "maybe_docs": len(ledger.maybe_docs),
        "searches": ledger.searches,
        "search_failures": len(ledger.search_failures),
        "generations": ledger.generations,
        "generation_failures": dict(failures),
        "jobs": len(ledger.jobs),
        "job_failures": len(ledger.job_failures),
    }


def orphans(pids: set[int], seconds: float = 120.0) -> list[int]:
    """Those of `pids` still running after up to `seconds` (generous: a busy machine)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.5)
    return sorted(p for p in pids if alive(p))
