"""Jobs from creation to a final state: validation, queue, workers, event log, publishing.

The manager runs in the service's event loop but never trains: a worker process does,
writing events to its job folder, which the manager copies into the numbered event
log and turns into state.

Replicas share the job store. A replica claims a queued job under a lease
(services.common.leases) and renews it with a heartbeat while the job runs; every
write it makes about the job is fenced by that lease. A replica that dies stops
renewing: once the lease lapses, another replica claims the job, copies in the
events the worker wrote meanwhile, and reattaches to the worker (still running, or
ended with its exit code recorded) or resumes the job from its last checkpoint in a
new attempt. A restarted replica (same `replica_id`) takes its own jobs back at once.
A job is published once: the published version is recorded on the job with its
`published` event, and a new owner looks for a version this job pushed before pushing.
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
from services.common.leases import Lease, LeaseLost, replica_identity
from services.common.paging import Page
from services.training.datasets import TASK_FORMATS
from services.training.executors import Executor, WorkerHandle
from services.training.fencing import EXIT_STOPPED, grant_lease
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
from services.training.worker_events import EVENTS_FILE, read_new_events

log = logging.getLogger(__name__)

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
        self.replica = replica_identity(settings.replica_id, settings.port)
        #: The jobs this replica holds, and their workers once started.
        self._leases: dict[str, Lease] = {}
        self._running: dict[str, WorkerHandle] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._closing = False
        self._scheduler: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    # Lifecycle
    async def start(self) -> None:
        """Takes back this replica's own jobs (it restarted under them), then schedules."""
        log.info("training replica %s", self.replica)
        claimed = await self._blocking(
            self.store.claim_own, self.replica, self.settings.lease_seconds
        )
        for job, lease in claimed:
            await self._take(job, lease)
        self._heartbeat = asyncio.create_task(self._beat())
        self._scheduler = asyncio.create_task(self._schedule())

    async def close(self) -> None:
        """Stops scheduling and hands this replica's jobs back for another to claim.

        Local workers checkpoint and stop, their jobs queued again; detached workers
        (Kubernetes) run on, and whichever replica claims the job reattaches to them.
        """
        self._closing = True
        if self._scheduler:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        held = list(self._leases.values())
        if self.executor.detached:
            for task in list(self._watchers):
                task.cancel()
        else:
            for handle in list(self._running.values()):
                handle.terminate()
        if self._watchers:
            await asyncio.wait(self._watchers, timeout=self.settings.cancel_grace_seconds * 2)
        for lease in held:  # what a worker's ending has not handed back already
            with contextlib.suppress(Exception):
                await self._blocking(self.store.release, lease)
        self._leases.clear()
        if self._heartbeat:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat

    async def _beat(self) -> None:
        """Renews every lease this replica holds; forgets one another replica has taken."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            for job_id, lease in list(self._leases.items()):
                try:
                    renewed = await self._blocking(
                        self.store.renew, lease, self.settings.lease_seconds
                    )
                except Exception:
                    log.warning("job %s: heartbeat failed; retrying", job_id, exc_info=True)
                    continue
                current = self._leases.get(job_id)
                if current is None or current.epoch != lease.epoch:
                    continue
                if renewed is None:
                    log.warning("job %s: lease taken over by another replica", job_id)
                    del self._leases[job_id]
                else:
                    self._leases[job_id] = renewed

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
        # A queued job ends here; a running one on whichever replica runs it, which sees
        # the request within `event_poll_seconds` (at once when it is this one).
        if not await self._blocking(self._finish_cancelled, job_id, None):
            handle = self._running.get(job_id)
            if handle is not None:
                await self._stop_for_cancel(job_id, handle)
        return await self._blocking(self.store.get_job, tenant, job_id)

    async def _stop_for_cancel(self, job_id: str, handle: WorkerHandle) -> None:
        await self._blocking((self.jobs_root / job_id / "cancel").touch)
        handle.terminate()
        asyncio.get_running_loop().call_later(self.settings.cancel_grace_seconds, handle.kill)

    def _finish_cancelled(self, job_id: str, lease: Lease | None) -> bool:
        if self.store.finish_job(job_id, "cancelled", lease):
            self.store.append_event(job_id, "cancelled", {}, lease)
            return True
        return False

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
        """Claims queued jobs (and lapsed ones) while this replica has free workers."""
        while not self._closing:
            free = self.settings.workers - len(self._leases)
            try:
                claimed = await self._blocking(
                    self.store.claim_jobs, self.replica, self.settings.lease_seconds, free
                )
                for job, lease in claimed:
                    await self._take(job, lease)
            except Exception:  # the database may be restarting: try again shortly
                log.exception("claiming jobs failed; retrying")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    async def _take(self, job: JobRecord, lease: Lease) -> None:
        """Runs a job this replica has just claimed: reattach, conclude, resume or start."""
        self._leases[job.id] = lease
        job_dir = self.jobs_root / job.id
        try:
            if job.cancel_requested:
                await self._blocking(self._finish_cancelled, job.id, lease)
                self._leases.pop(job.id, None)
                return
            if job.attempts > 0:
                # A worker ran this job under another replica (or before a restart): log
                # what it wrote meanwhile, then pick it up where it is.
                await self._blocking(self._ingest, job.id, job_dir, lease)
                handle = await self.executor.attach(job.id, job_dir, job.attempts)
                if handle is not None:
                    log.info("job %s: attempt %d taken over", job.id, job.attempts)
                    self._follow(job.id, job_dir, handle)
                    return
                if job.attempts > self.settings.max_resumes:
                    await self._blocking(
                        self._fail,
                        job.id,
                        f"the training service restarted {job.attempts} times while this job"
                        " ran; start a new job (consider fewer steps or more checkpoints)",
                        lease,
                    )
                    self._leases.pop(job.id, None)
                    return
                log.info("job %s: resuming from its last checkpoint", job.id)
            await self._launch(job, lease)
        except LeaseLost:
            log.warning("job %s: lease taken over while starting it", job.id)
            self._leases.pop(job.id, None)
        except Exception as exc:  # e.g. the cluster refused the Kubernetes Job
            log.exception("job %s: starting the worker failed", job.id)
            message = getattr(exc, "message", "") or type(exc).__name__
            reason = (
                f"the training service could not start the worker ({message}); start the job again"
            )
            with contextlib.suppress(Exception):
                await self._blocking(self._fail, job.id, reason, lease)
            self._leases.pop(job.id, None)

    async def _launch(self, job: JobRecord, lease: Lease) -> None:
        job_dir = await self._blocking(self._prepare, job, lease)
        if job_dir is None:
            self._leases.pop(job.id, None)
            return
        handle = await self.executor.start(job.id, job_dir, job.attempts + 1)
        self._follow(job.id, job_dir, handle)

    def _follow(self, job_id: str, job_dir: Path, handle: WorkerHandle) -> None:
        self._running[job_id] = handle
        task = asyncio.create_task(self._watch(job_id, job_dir, handle))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _prepare(self, job: JobRecord, lease: Lease) -> Path | None:
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
            self._fail(job.id, f"{exc.message}; it was removed after the job was created", lease)
            return None
        attempt = job.attempts + 1
        payload = {"job_id": job.id, "spec": job.spec, "base_model_dir": self._relative(base)}
        payload["datasets"] = paths
        payload["attempt"] = attempt
        (job_dir / "job.json").write_text(json.dumps(payload, indent=2))
        # The store's attempt count is the worker's epoch; the lease file tells the workers.
        values: dict[str, Any] = {"state": "running", "attempts": attempt}
        if job.started_at is None:
            values["started_at"] = time.time()
        self.store.update_job(job.id, lease, **values)
        grant_lease(job_dir, attempt)
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
        cancelling = False
        try:
            while True:
                done, _ = await asyncio.wait({wait}, timeout=self.settings.event_poll_seconds)
                lease = self._leases.get(job_id)
                if lease is None:
                    raise LeaseLost(f"job {job_id}: the heartbeat found the lease taken over")
                reason, cancel = await self._blocking(self._ingest, job_id, job_dir, lease)
                error = reason or error
                if cancel and not cancelling and not done:
                    cancelling = True
                    await self._stop_for_cancel(job_id, handle)
                if done:
                    break
            await self._conclude(job_id, job_dir, wait.result(), error, lease)
        except LeaseLost:
            # The replica that holds the job now follows its worker; leave it alone.
            log.warning("job %s: another replica took the job over", job_id)
        except Exception:
            log.exception("job %s: watching the worker failed", job_id)
            with contextlib.suppress(Exception):
                await self._blocking(
                    self._fail,
                    job_id,
                    "the training service lost track of the worker; start the job again",
                    self._leases.get(job_id),
                )
        finally:
            wait.cancel()
            self._running.pop(job_id, None)
            self._leases.pop(job_id, None)
            self._wake.set()

    def _ingest(self, job_id: str, job_dir: Path, lease: Lease) -> tuple[str, bool]:
        """Copies new worker events into the event log, with the file offset they end at in
        the same transaction (so none is logged twice); returns an error reason if one
        came, and whether a cancel was requested."""
        job = self.store.find_job(job_id)
        assert job is not None
        batch = read_new_events(job_dir / EVENTS_FILE, job.events_offset, job.attempts)
        if batch is None:
            return "", job.cancel_requested
        if batch.refused:
            log.warning("job %s: refused %d lines of the events file", job_id, batch.refused)
        metrics = {**job.metrics, **batch.metrics}
        self.store.record(
            job_id, lease, batch.events, events_offset=batch.end, metrics=metrics, **batch.updates
        )
        return batch.error, job.cancel_requested

    async def _conclude(
        self, job_id: str, job_dir: Path, code: int, error: str, lease: Lease
    ) -> None:
        job = await self._blocking(self.store.find_job, job_id)
        assert job is not None
        if job.cancel_requested:
            await self._blocking(self._finish_cancelled, job_id, lease)
            return
        if code == EXIT_STOPPED:
            # Stopped, not failed (a shutdown, a node drained): any replica resumes it.
            log.info("job %s: worker stopped; the job is queued to resume", job_id)
            await self._blocking(self._hand_back, job_id, lease)
            return
        if code != 0:
            reason = error or f"the worker exited with code {code}; see the job log"
            await self._blocking(self._fail, job_id, reason, lease)
            return
        result = json.loads(await self._blocking((job_dir / "result.json").read_text))
        metrics = {**job.metrics, **result["metrics"]}
        spec = JobSpec.from_dict(job.spec)
        adapter_ref = ""
        if result["artifact_kind"] == "model":
            metrics["publishable"] = 0.0
            if spec.publish.adapter_name:
                note = MODEL_NOTE.format(method=spec.method)
                await self._blocking(
                    self.store.append_event, job_id, "notice", {"message": note}, lease
                )
        elif spec.publish.adapter_name:
            try:
                adapter_ref = await self._publish(job, spec, result, metrics, job_dir, lease)
            except LeaseLost:
                raise
            except Exception as exc:
                log.exception("job %s: publishing failed", job_id)
                message = getattr(exc, "message", "") or type(exc).__name__
                await self._blocking(
                    self._fail,
                    job_id,
                    f"training finished but publishing to the registry failed ({message});"
                    " the adapter is kept with the job: start a new job once the registry is up",
                    lease,
                    metrics=metrics,
                )
                return
        await self._blocking(self._succeed, job_id, metrics, adapter_ref, lease)

    def _hand_back(self, job_id: str, lease: Lease) -> None:
        if self.store.release(lease, state="queued"):
            job = self.store.find_job(job_id)
            position = job.queue_position if job is not None else 0
            self.store.append_event(job_id, "queued", {"position": position})

    def _succeed(
        self, job_id: str, metrics: dict[str, float], adapter_ref: str, lease: Lease
    ) -> None:
        done = self.store.finish_job(
            job_id, "succeeded", lease, metrics=metrics, adapter_ref=adapter_ref
        )
        if done:
            self.store.append_event(job_id, "succeeded", {}, lease)

    async def _publish(
        self,
        job: JobRecord,
        spec: JobSpec,
        result: dict[str, Any],
        metrics: dict[str, float],
        job_dir: Path,
        lease: Lease,
    ) -> str:
        """Pushes the adapter once: a new owner of the job finds what an earlier one pushed."""
        if job.adapter_ref:
            return job.adapter_ref  # published, and recorded, by an earlier owner
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
        published = await self.publisher.find(job.tenant, name, job.id)
        if published is None:
            # The last look at the lease before a push that cannot be taken back.
            if await self._blocking(self.store.renew, lease, self.settings.lease_seconds) is None:
                raise LeaseLost(f"job {job.id}: lease taken over before publishing")
            published = await self.publisher.push(
                job.tenant,
                name,
                job_dir / "artifact",
                lineage,
                metrics,
                f"{spec.method} on {spec.base_model} by training job {job.id}",
            )
        else:
            log.info("job %s: %s was pushed by an earlier owner", job.id, published.ref)
        payload: dict[str, Any] = {"adapter_ref": published.ref}
        alias = spec.publish.promote_alias
        if alias:
            reason = check_gate(spec.publish.promote_if, metrics)
            if reason:
                payload["promotion_skipped_reason"] = reason
            else:
                await self.publisher.set_alias(job.tenant, name, alias, published.version)
                payload["promoted_alias"] = alias
        # The version goes on the job with its event, in one transaction: recorded once.
        await self._blocking(
            self.store.record,
            job.id,
            lease,
            [("published", payload)],
            adapter_ref=published.ref,
        )
        return published.ref

    def _fail(self, job_id: str, reason: str, lease: Lease | None, **values: Any) -> None:
        if self.store.finish_job(job_id, "failed", lease, failure_reason=reason, **values):
            self.store.append_event(job_id, "failed", {"reason": reason}, lease)
            log.info("job %s failed: %s", job_id, reason)
