"""Jobs from creation to a final state: validation, queue, workers, event log, publishing.

The manager runs in the service's event loop but never trains: a worker process does,
writing events to its job folder, which the manager copies into the numbered event
log and turns into state. A restarted service requeues jobs it finds running: their
worker resumes from the last checkpoint, or the job fails with a reason once it has
been resumed too often.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.kit import Blocking
from services.common.paging import Page
from services.training.datasets import TASK_FORMATS
from services.training.executors import Executor, WorkerHandle
from services.training.fencing import grant_lease
from services.training.publisher import Publisher, check_gate
from services.training.settings import TrainingSettings
from services.training.spec import JobSpec, validate, with_defaults
from services.training.store import (
    FINAL_STATES,
    NEWEST_FIRST,
    DatasetRecord,
    EventRecord,
    JobRecord,
    TrainingStore,
)
from services.training.uploads import DatasetManager

log = logging.getLogger(__name__)

WORKER_EVENTS = ("started", "step", "evaluation", "checkpoint")
MODEL_NOTE = (
    "{method} trains the base model's own weights: the result is a full model folder kept"
    " with the job, not an adapter, so it is not published to the adapter registry"
)


def _page_key(record: JobRecord | DatasetRecord) -> tuple[float, str]:
    return (record.created_at, record.id)


class JobManager:
    """Creates, schedules, watches and cancels jobs; every lookup is tenant-checked.

    Store and file work is blocking, so it runs through `blocking` (the kit's
    executor); only scheduling decisions and worker handles live on the event loop.
    """

    def __init__(
        self,
        settings: TrainingSettings,
        store: TrainingStore,
        datasets: DatasetManager,
        executor: Executor,
        publisher: Publisher | None,
        blocking: Blocking,
    ) -> None:
        self.settings = settings
        self.store = store
        self.datasets = datasets
        self.executor = executor
        self.publisher = publisher
        self._blocking = blocking
        self.data_root = settings.data_dir
        self.jobs_root = self.data_root / "training" / "jobs"
        self.models_dir = settings.resolved_models_dir()
        self._running: dict[str, WorkerHandle] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._closing = False
        self._scheduler: asyncio.Task[None] | None = None

    # Lifecycle
    async def start(self) -> None:
        await self._blocking(self._recover)
        self._scheduler = asyncio.create_task(self._schedule())

    async def close(self) -> None:
        """Stops scheduling; local workers checkpoint and stop, their jobs stay running."""
        self._closing = True
        if self._scheduler:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        if not self.executor.detached:
            for handle in list(self._running.values()):
                handle.terminate()
        if self._watchers:
            await asyncio.wait(self._watchers, timeout=self.settings.cancel_grace_seconds * 2)

    def _recover(self) -> None:
        for job in self.store.jobs_in_state("running"):
            if job.attempts > self.settings.max_resumes:
                self._fail(
                    job.id,
                    f"the training service restarted {job.attempts} times while this job ran;"
                    " start a new job (consider fewer steps or more checkpoints)",
                )
                continue
            log.info("job %s was running when the service stopped: requeued to resume", job.id)
            self.store.update_job(job.id, state="queued")
            position = self.store.queue_position(self.store.get_job(job.tenant, job.id))
            self.store.append_event(job.id, "queued", {"position": position})

    # Requests
    def model_dir(self, base_model: str) -> Path:
        path = self.models_dir / base_model
        if not (path / "config.json").is_file():
            raise NotFound(
                f"base model {base_model!r} is not in the training service's model store"
            )
        return path

    async def create_job(self, tenant: str, spec: JobSpec) -> JobRecord:
        job = await self._blocking(self._create_job, tenant, spec)
        self._wake.set()
        return job

    def _create_job(self, tenant: str, spec: JobSpec) -> JobRecord:
        spec = with_defaults(spec)
        validate(spec, tenant)
        self.model_dir(spec.base_model)
        if spec.publish.adapter_name and self.publisher is None:
            raise FailedPrecondition(
                "this training service has no registry to publish to (set"
                " LORAPLEX_TRAINING_REGISTRY_ADDR and LORAPLEX_TRAINING_SERVICE_KEY); start the"
                " job without a publish name, or configure them"
            )
        wanted = TASK_FORMATS[spec.task]
        ids = [d.dataset_id for d in spec.train]
        ids += [i for i in (spec.validation_dataset_id, spec.test_dataset_id) if i]
        for dataset_id in ids:
            record = self.datasets.store.get_dataset(tenant, dataset_id)
            if record.format not in wanted:
                raise InvalidArgument(
                    f"dataset {dataset_id!r} holds {record.format} rows but task {spec.task}"
                    f" needs {' or '.join(wanted)}"
                )
        job = self.store.create_job(tenant, spec.to_dict())
        position = self.store.queue_position(job)
        self.store.append_event(job.id, "queued", {"position": position})
        log.info(
            "tenant %s created job %s (%s, queue position %d)",
            tenant,
            job.id,
            spec.method,
            position,
        )
        return self.store.get_job(tenant, job.id)

    async def get_job(self, tenant: str, job_id: str) -> JobRecord:
        return await self._blocking(self.store.get_job, tenant, job_id)

    async def list_jobs(self, tenant: str, size: int, token: str) -> tuple[list[JobRecord], str]:
        """Newest first."""
        page = Page.parse(size, token, first=NEWEST_FIRST)
        rows = await self._blocking(self.store.list_jobs, tenant, page.after, page.fetch)
        return page.cut(rows, key=_page_key)

    async def upload_dataset(
        self,
        tenant: str,
        name: str,
        fmt: str,
        size: int,
        sha256: str,
        data: AsyncIterator[bytes],
    ) -> DatasetRecord:
        """Streams `data` to a temp file, then validates and keeps it (all off the loop)."""
        upload = await self._blocking(self.datasets.begin, tenant, name, fmt, size, sha256)
        try:
            async for chunk in data:
                await self._blocking(upload.write, chunk)
        except BaseException:
            await self._blocking(upload.abort)
            raise
        return await self._blocking(self.datasets.finish, upload)

    async def get_dataset(self, tenant: str, dataset_id: str) -> DatasetRecord:
        return await self._blocking(self.datasets.store.get_dataset, tenant, dataset_id)

    async def list_datasets(
        self, tenant: str, size: int, token: str
    ) -> tuple[list[DatasetRecord], str]:
        """Newest first."""
        page = Page.parse(size, token, first=NEWEST_FIRST)
        rows = await self._blocking(
            self.datasets.store.list_datasets, tenant, page.after, page.fetch
        )
        return page.cut(rows, key=_page_key)

    async def cancel_job(self, tenant: str, job_id: str) -> JobRecord:
        job = await self._blocking(self.store.get_job, tenant, job_id)
        if job.state in FINAL_STATES:
            raise FailedPrecondition(f"job {job_id!r} already ended ({job.state})")
        await self._blocking(self.store.update_job, job_id, cancel_requested=True)
        handle = self._running.get(job_id)
        if handle is None:
            await self._blocking(self._finish_cancelled, job_id)
        else:
            await self._blocking((self.jobs_root / job_id / "cancel").touch)
            handle.terminate()
            asyncio.get_running_loop().call_later(self.settings.cancel_grace_seconds, handle.kill)
        return await self._blocking(self.store.get_job, tenant, job_id)

    def _finish_cancelled(self, job_id: str) -> None:
        if self.store.finish_job(job_id, "cancelled"):
            self.store.append_event(job_id, "cancelled", {})

    async def events(
        self, tenant: str, job_id: str, after: int, follow: bool = True
    ) -> AsyncIterator[EventRecord]:
        """History first, then (with `follow`) live events until the job's final event."""
        await self._blocking(self.store.get_job, tenant, job_id)
        while True:
            batch = await self._blocking(self.store.events_after, job_id, after)
            for event in batch:
                after = event.sequence
                yield event
                if event.kind in ("succeeded", "failed", "cancelled"):
                    return
            if not batch:
                if not follow:
                    return
                await asyncio.sleep(self.settings.event_poll_seconds)

    # Scheduling
    async def _schedule(self) -> None:
        while not self._closing:
            free = self.settings.workers - len(self._running)
            queued = await self._blocking(self.store.jobs_in_state, "queued")
            for job in queued[: max(free, 0)]:
                await self._launch(job)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    async def _launch(self, job: JobRecord) -> None:
        job_dir = await self._blocking(self._prepare, job)
        if job_dir is None:
            return
        attempt = job.attempts + 1
        handle = await self.executor.start(job.id, job_dir, attempt)
        self._running[job.id] = handle
        latest = await self._blocking(self.store.find_job, job.id)
        if latest is not None and latest.cancel_requested:
            await self._blocking((job_dir / "cancel").touch)
            handle.terminate()
        task = asyncio.create_task(self._watch(job.id, job_dir, handle))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _prepare(self, job: JobRecord) -> Path | None:
        """Writes the job's worker input and marks it running; None if it cannot start."""
        job_dir = self.jobs_root / job.id
        job_dir.mkdir(parents=True, exist_ok=True)
        spec = JobSpec.from_dict(job.spec)
        try:
            base = self.model_dir(spec.base_model)
            paths = {}
            for dataset_id in {d.dataset_id for d in spec.train} | {
                spec.validation_dataset_id,
                spec.test_dataset_id,
            } - {""}:
                record = self.datasets.store.get_dataset(job.tenant, dataset_id)
                paths[dataset_id] = self._relative(self.datasets.path(record))
        except NotFound as exc:
            self._fail(job.id, f"{exc.message}; it was removed after the job was created")
            return None
        attempt = job.attempts + 1
        payload = {"job_id": job.id, "spec": job.spec, "base_model_dir": self._relative(base)}
        payload["datasets"] = paths
        payload["attempt"] = attempt
        (job_dir / "job.json").write_text(json.dumps(payload, indent=2))
        # The store's attempt count is the epoch; the lease file tells the workers.
        self.store.update_job(job.id, state="running", attempts=attempt)
        grant_lease(job_dir, attempt)
        if job.started_at is None:
            self.store.update_job(job.id, started_at=time.time())
        return job_dir

    def _relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.data_root).as_posix()
        except ValueError:
            return str(path.resolve())

    # Watching a worker
    async def _watch(self, job_id: str, job_dir: Path, handle: WorkerHandle) -> None:
        wait = asyncio.create_task(handle.wait())
        error = ""
        try:
            while True:
                done, _ = await asyncio.wait({wait}, timeout=self.settings.event_poll_seconds)
                error = await self._blocking(self._ingest, job_id, job_dir) or error
                if done:
                    break
            code = wait.result()
            error = await self._blocking(self._ingest, job_id, job_dir) or error
            await self._conclude(job_id, job_dir, code, error)
        except Exception:
            log.exception("job %s: watching the worker failed", job_id)
            await self._blocking(
                self._fail,
                job_id,
                "the training service lost track of the worker; start the job again",
            )
        finally:
            self._running.pop(job_id, None)
            self._wake.set()

    def _ingest(self, job_id: str, job_dir: Path) -> str:
        """Copies new worker events into the event log; returns an error reason if one came."""
        path = job_dir / "events.jsonl"
        if not path.exists():
            return ""
        job = self.store.find_job(job_id)
        assert job is not None
        with path.open("rb") as handle:
            handle.seek(job.events_offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        if end == 0:
            return ""
        error = ""
        updates: dict[str, Any] = {}
        metrics = dict(job.metrics)
        stale = 0
        for line in data[:end].decode("utf-8").splitlines():
            event = json.loads(line)
            if event.pop("attempt", job.attempts) != job.attempts:
                stale += 1  # a fenced worker of an earlier attempt: refused
                continue
            kind = event.pop("kind")
            event.pop("time", None)
            if kind == "error":
                error = event["reason"]
            elif kind == "early_stopped":
                metrics["early_stopped_at_step"] = float(event["step"])
            elif kind in WORKER_EVENTS:
                self.store.append_event(job_id, kind, event)
                if kind == "started":
                    updates["total_steps"] = event["total_steps"]
                elif kind == "step":
                    updates["step"] = event["step"]
                    metrics["train_loss"] = event["loss"]
                elif kind == "evaluation":
                    metrics.update(event["metrics"])
        if stale:
            log.warning("job %s: refused %d events of an earlier attempt", job_id, stale)
        self.store.update_job(
            job_id, events_offset=job.events_offset + end, metrics=metrics, **updates
        )
        return error

    async def _conclude(self, job_id: str, job_dir: Path, code: int, error: str) -> None:
        job = await self._blocking(self.store.find_job, job_id)
        assert job is not None
        if job.cancel_requested:
            await self._blocking(self._finish_cancelled, job_id)
            return
        if self._closing and code != 0:
            log.info("job %s: worker stopped for shutdown; it resumes on restart", job_id)
            return
        if code != 0:
            reason = error or f"the worker exited with code {code}; see the job log"
            await self._blocking(self._fail, job_id, reason)
            return
        result = json.loads(await self._blocking((job_dir / "result.json").read_text))
        metrics = {**job.metrics, **result["metrics"]}
        spec = JobSpec.from_dict(job.spec)
        adapter_ref = ""
        if result["artifact_kind"] == "model":
            metrics["publishable"] = 0.0
            if spec.publish.adapter_name:
                note = MODEL_NOTE.format(method=spec.method)
                await self._blocking(self.store.append_event, job_id, "notice", {"message": note})
        elif spec.publish.adapter_name:
            try:
                adapter_ref = await self._publish(job, spec, result, metrics, job_dir)
            except Exception as exc:
                log.exception("job %s: publishing failed", job_id)
                message = getattr(exc, "message", "") or type(exc).__name__
                await self._blocking(
                    self._fail,
                    job_id,
                    f"training finished but publishing to the registry failed ({message});"
                    " the adapter is kept with the job: start a new job once the registry is up",
                    metrics=metrics,
                )
                return
        await self._blocking(self._succeed, job_id, metrics, adapter_ref)

    def _succeed(self, job_id: str, metrics: dict[str, float], adapter_ref: str) -> None:
        if self.store.finish_job(job_id, "succeeded", metrics=metrics, adapter_ref=adapter_ref):
            self.store.append_event(job_id, "succeeded", {})

    async def _publish(
        self,
        job: JobRecord,
        spec: JobSpec,
        result: dict[str, Any],
        metrics: dict[str, float],
        job_dir: Path,
    ) -> str:
        if self.publisher is None:
            raise FailedPrecondition("no registry is configured")
        datasets = [await self.get_dataset(job.tenant, d.dataset_id) for d in spec.train]
        lineage = {
            "training_job": job.id,
            "base_model": spec.base_model,
            "base_model_sha256": result["base_model_sha256"],
            "dataset_sha256": ",".join(d.sha256 for d in datasets),
            "dataset_ids": ",".join(d.id for d in datasets),
            "method": spec.method,
            "task": spec.task,
            "hyperparameters": json.dumps(spec.hyperparameters.__dict__, sort_keys=True),
            "metrics": json.dumps({k: v for k, v in metrics.items() if math.isfinite(v)}),
        }
        if spec.method == "lora":
            lineage["lora"] = json.dumps(spec.lora.__dict__, sort_keys=True)
        name = spec.publish.adapter_name
        published = await self.publisher.push(
            job.tenant,
            name,
            job_dir / "artifact",
            lineage,
            metrics,
            f"{spec.method} on {spec.base_model} by training job {job.id}",
        )
        payload: dict[str, Any] = {"adapter_ref": published.ref}
        alias = spec.publish.promote_alias
        if alias:
            reason = check_gate(spec.publish.promote_if, metrics)
            if reason:
                payload["promotion_skipped_reason"] = reason
            else:
                await self.publisher.set_alias(job.tenant, name, alias, published.version)
                payload["promoted_alias"] = alias
        await self._blocking(self.store.append_event, job.id, "published", payload)
        return published.ref

    def _fail(self, job_id: str, reason: str, **values: Any) -> None:
        if self.store.finish_job(job_id, "failed", failure_reason=reason, **values):
            self.store.append_event(job_id, "failed", {"reason": reason})
            log.info("job %s failed: %s", job_id, reason)
