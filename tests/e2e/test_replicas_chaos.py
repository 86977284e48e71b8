"""Two replicas of every service on PostgreSQL and an S3 object store, under a mixed load,
while replicas are killed with SIGKILL and restarted one at a time.

The object store is moto's standalone server: an in-memory S3 *emulator* (no MinIO can be
installed here). PostgreSQL is the real server from the Debian packages. The load (pushes,
alias flips, ingest, searches, training jobs, generations with an adapter and RAG) runs
through the SDK on the every-replica addresses, with no retries of its own. Passes when:
no acknowledged write is lost, no job ran twice or published twice, every generation was
answered, and both inference replicas served generations (from their /metrics).

Uses the tiny test model. Every loop is bounded in count and in time; engine starts and
generations get generous deadlines, never tight ones.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from loraplex.client import (
    LoraplexClientError,
    RegistryClient,
    RetrievalClient,
    TrainingClient,
)
from loraplex.training.v1 import training_service_pb2 as pb
from services.suite import SERVICES, LocalSuite
from services.suite_backends import postgres_bindir
from tests.e2e.chaos import (
    ADAPTER,
    ALIAS,
    COLLECTION,
    GENERATE_METHOD,
    Ledger,
    Load,
    RequestCounts,
    describe,
    files_digest,
    job_events,
    orphans,
    wait_for_job,
)
from tests.e2e.test_local_suite import HANDBOOK, User
from tests.processes import descendants
from tests.tiny_llm import build_tiny_llama, make_random_lora

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(postgres_bindir() is None, reason="needs PostgreSQL server binaries"),
]

#: One at a time, every replica of every service once; training while a job runs.
KILLS = (
    ("registry", 0), ("retrieval", 1), ("training", 0), ("inference", 1),
    ("registry", 1), ("retrieval", 0), ("training", 1), ("inference", 0),
)  # fmt: skip
#: Upper bound on the whole load; the kill schedule normally ends it much sooner.
LOAD_SECONDS = 60 * 60
START_SECONDS = 30 * 60  # a vLLM engine on a busy 2-core machine: generous on purpose
TINY = {
    "LORAPLEX_INFERENCE_MODEL_NAME": "tiny",
    "LORAPLEX_INFERENCE_MAX_MODEL_LEN": "512",
    "LORAPLEX_INFERENCE_KV_CACHE_BYTES": str(128 * 1024 * 1024),
    "LORAPLEX_INFERENCE_MAX_LORAS": "2",
    "LORAPLEX_INFERENCE_MAX_LORA_RANK": "16",
    "LORAPLEX_INFERENCE_WATCH_TENANTS": '["acme"]',
}


def _wait_for_running_job(training: TrainingClient, ledger: Ledger, seconds: float) -> None:
    """Until some job of the load is running (so the kill lands mid-job), or time's up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with ledger.lock:
            jobs = list(ledger.jobs)
        for job_id in jobs:
            try:
                if training.get_job(job_id).state == pb.JOB_STATE_RUNNING:
                    return
            except Exception:  # a replica may be restarting: keep looking until the deadline
                pass
        time.sleep(1)


def test_two_replicas_of_everything_survive_sigkills_under_load(tmp_path):
    data = tmp_path / "data"
    model_dir = data / "models" / "tiny"
    suite = LocalSuite(
        data, replicas=2, overrides={**TINY, "LORAPLEX_INFERENCE_MODEL": str(model_dir)}
    )
    user = User(suite.env)
    key = user.run("keys", "create", "--tenant", "acme").stdout.strip().splitlines()[-1]
    user.env["LORAPLEX_API_KEY"] = key
    tiny = build_tiny_llama(tmp_path / "tiny-src")
    user.run("models", "import", str(tiny), "--name", "tiny")
    adapters = [
        make_random_lora(tmp_path / f"lora-{i}", tiny, seed=i, base_model_name="tiny")
        for i in range(3)
    ]
    rows = [{"prompt": "question: who approves travel?", "completion": "the director"}] * 16
    dataset = tmp_path / "train.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))

    ledger = Ledger()
    with suite:
        suite.start_all(timeout=START_SECONDS)
        addresses = {s: suite.address(s) for s in SERVICES}
        with RegistryClient(addresses["registry"], key) as registry:
            first = registry.push(ADAPTER, adapters[0]).version
            registry.set_alias(ADAPTER, ALIAS, first)
        ledger.pushed[first] = files_digest(adapters[0])
        ledger.flips.append((first, True))
        with RetrievalClient(addresses["retrieval"], key) as retrieval:
            retrieval.create_collection(COLLECTION)
            retrieval.upsert(COLLECTION, [{"id": n, "text": t} for n, t in HANDBOOK.items()])
        with TrainingClient(addresses["training"], key) as training:
            dataset_id = training.upload_dataset(dataset).id

        counts = RequestCounts(
            [suite.metrics_url("inference", i) for i in range(2)], GENERATE_METHOD
        )
        counts.start()
        load = Load(addresses, key, ledger, deadline=time.monotonic() + LOAD_SECONDS)
        load.spawn("pusher", lambda: load.pusher(adapters, limit=200, pause=3.0))
        load.spawn("flipper", lambda: load.flipper(limit=200, pause=5.0))
        load.spawn("ingester", lambda: load.ingester(limit=400, pause=2.0))
        load.spawn("searcher", lambda: load.searcher(limit=2000, pause=1.0))
        load.spawn("trainer", lambda: load.trainer(dataset_id, limit=4, job_seconds=900))
        for n in range(2):
            load.spawn(f"generator-{n}", lambda: load.generator(limit=2000, pause=0.5))

        engines: set[int] = set()
        with TrainingClient(addresses["training"], key) as training:
            for service, replica in KILLS:
                time.sleep(10)  # load flows through both replicas first
                if service == "training":
                    _wait_for_running_job(training, ledger, seconds=300)
                started = time.monotonic()
                if service == "inference":  # its vLLM engine core and worker must end too
                    leader = suite.processes[suite.process_name(service, replica)].pid
                    engines |= descendants(leader)
                suite.kill(service, replica)
                time.sleep(3)  # the survivors carry the load alone for a while
                suite.restart(service, replica, timeout=START_SECONDS)
                print(
                    f"killed and restarted {service}-{replica} in "
                    f"{time.monotonic() - started:.0f}s; so far {describe(ledger)}",
                    flush=True,
                )
        time.sleep(15)
        load.join()
        totals = counts.totals()
        summary = describe(ledger)
        print("chaos load:", summary, "generations per inference replica:", totals)
        assert not load.crashes, load.crashes
        problems = {
            "acknowledged writes": _lost_writes(ledger, addresses, key, tmp_path / "pulled"),
            "jobs": _jobs_run_twice_or_lost(ledger, addresses, key),
            "generations": _unanswered(ledger),
            "replica traffic": [] if all(t > 0 for t in totals) else [f"per replica: {totals}"],
            "engine processes outliving their killed server": orphans(engines),
        }
    _judge(problems, summary)


#: Guarantees that cannot hold yet because a piece another branch builds is missing, with
#: that piece named; the test then xfails on exactly those (and fails on any other).
MISSING: dict[str, str] = {}


def _judge(problems: dict[str, list[str]], summary: dict[str, object]) -> None:
    failing = {name: found for name, found in problems.items() if found}
    report = "; ".join(f"{name}: {found[:5]}" for name, found in failing.items())
    if failing and set(failing) <= set(MISSING):
        pytest.xfail(" | ".join(f"{n}: {MISSING[n]}" for n in failing) + f" ({report})")
    assert not failing, f"{report} (load: {summary})"


def _lost_writes(ledger: Ledger, addresses: dict[str, str], key: str, pulled: Path) -> list[str]:
    """Every pushed version pulls back byte for byte, the alias is where the last
    acknowledged flip put it (or a later, failed one), every acknowledged document is
    found by its own metadata and counted."""
    lost = []
    with RegistryClient(addresses["registry"], key) as registry:
        for version, digest in sorted(ledger.pushed.items()):
            try:
                registry.pull(f"{ADAPTER}@{version}", pulled / str(version))
            except LoraplexClientError as error:
                lost.append(f"{ADAPTER}@{version}: {error}")
                continue
            if files_digest(pulled / str(version)) != digest:
                lost.append(f"{ADAPTER}@{version}: other bytes than pushed")
        last = max(i for i, (_, ok) in enumerate(ledger.flips) if ok)
        allowed = {v for v, _ in ledger.flips[last:]}
        current = registry.get(f"{ADAPTER}@{ALIAS}").version
        if current not in allowed:
            lost.append(f"alias {ALIAS} on {current}, acknowledged flips allow {allowed}")
    with RetrievalClient(addresses["retrieval"], key) as retrieval:
        for doc_id in sorted(ledger.docs):
            number = doc_id.rpartition("-")[2]
            hits = retrieval.search(COLLECTION, "parcel", top_k=1, where={"n": number})
            if [c.document_id for c in hits.chunks] != [doc_id]:
                lost.append(f"document {doc_id} not found")
        documents = retrieval.stats(COLLECTION).documents
        low = len(HANDBOOK) + len(ledger.docs)
        if not low <= documents <= low + len(ledger.maybe_docs):
            lost.append(f"{documents} documents, expected {low} to {low + len(ledger.maybe_docs)}")
    return lost


def _jobs_run_twice_or_lost(ledger: Ledger, addresses: dict[str, str], key: str) -> list[str]:
    """Each job succeeds once, publishes exactly one version, and its history shows one
    start per attempt (two replicas running it at once would show more)."""
    if not ledger.jobs:
        return [f"no job was created: {ledger.job_failures[:3]}"]
    wrong = []
    with (
        TrainingClient(addresses["training"], key) as training,
        RegistryClient(addresses["registry"], key) as registry,
    ):
        for job_id, name in ledger.jobs.items():
            job = wait_for_job(training, job_id, time.monotonic() + 900)
            if job is None or job.state != pb.JOB_STATE_SUCCEEDED:
                reason = job.failure_reason if job is not None else "no answer"
                wrong.append(f"{job_id} did not succeed: {reason}")
                continue
            kinds = job_events(training, job_id)
            print(f"job {job_id}: {job.attempts} attempt(s), events {dict(kinds)}", flush=True)
            if kinds["published"] != 1 or kinds["succeeded"] != 1:
                wrong.append(f"{job_id} events {dict(kinds)}")
            if kinds["started"] != job.attempts:
                wrong.append(f"{job_id}: {kinds['started']} starts for {job.attempts} attempts")
            versions = len(list(registry.list_versions(name)))
            if versions != 1:
                wrong.append(f"{job_id} published {versions} versions of {name}")
    return wrong


def _unanswered(ledger: Ledger) -> list[str]:
    """Every generation answered (UNAVAILABLE retried by the SDK, not by this test)."""
    if ledger.generations == 0:
        return ["no generation was answered"]
    return ledger.generation_failures


def test_replicated_suite_env_wires_every_replica(tmp_path):
    suite = LocalSuite(tmp_path / "d", replicas=3)
    registry = suite.env["LORAPLEX_REGISTRY_ADDR"].split(",")
    assert registry == [suite.replica_address("registry", i) for i in range(3)]
    assert suite.env["LORAPLEX_INFERENCE_REGISTRY_ADDR"] == suite.address("registry")
    assert suite.env["LORAPLEX_INFERENCE_RETRIEVAL_ADDR"] == suite.address("retrieval")
    assert suite.env["LORAPLEX_TRAINING_REGISTRY_ADDR"] == suite.address("registry")
    for service in ("registry", "retrieval", "training"):
        url = suite.env[f"LORAPLEX_{service.upper()}_DATABASE_URL"]
        assert url.startswith("postgresql+psycopg://") and url.endswith(f"/{service}")
    assert suite.env["LORAPLEX_REGISTRY_BLOB_URL"] == "s3://loraplex/registry"
    ports = [p for s in SERVICES for p in suite.ports[s] + suite.metrics_ports[s]]
    assert len(set(ports)) == len(ports) == 24
    # Pods keep their own folders; training's replicas share one (ReadWriteMany).
    assert suite.replica_data_dir("inference", 0) != suite.replica_data_dir("inference", 1)
    assert suite.replica_data_dir("training", 0) == suite.replica_data_dir("training", 1)
    # The embedded shape is untouched: one process per service, SQLite, no metrics port.
    embedded = LocalSuite(tmp_path / "e")
    assert "LORAPLEX_REGISTRY_DATABASE_URL" not in embedded.env
    assert embedded.address("registry") == embedded.replica_address("registry")
    assert embedded.process_name("registry") == "registry"
    assert embedded.replica_data_dir("training") == embedded.data_dir
    assert Path(embedded.env["LORAPLEX_DATA_DIR"]) == embedded.data_dir
