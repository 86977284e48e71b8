"""Jobs from creation to a final state: validation, queue, cancel, the event stream.

The manager runs in the service's event loop but never trains: a worker process does,
writing events to its job folder, which this replica's `JobRunner` (runner.py) copies
into the numbered event log and turns into state, under a lease on the job shared
with the other replicas.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.kit import Blocking
from services.common.paging import Page
from services.training.datasets import TASK_FORMATS
from services.training.executors import Executor
from services.training.publisher import Publisher
from services.training.runner import JobRunner, find_model
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


def _page_key(record: JobRecord | DatasetRecord) -> tuple[float, str]:
    return (record.created_at, record.id)


class JobManager:
    """Creates, lists, cancels and streams jobs and datasets; every lookup is tenant-checked.

    Running them is the `runner`'s. Store and file work is blocking, so it runs through
    `blocking` (the kit's executor).
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
        self.publisher = publisher
        self._blocking = blocking
        self.models_dir = settings.resolved_models_dir()
        self.runner = JobRunner(settings, store, datasets, executor, publisher, blocking)

    # Lifecycle
    async def start(self) -> None:
        await self.runner.start()

    async def close(self) -> None:
        await self.runner.close()

    # Requests
    def model_dir(self, base_model: str) -> Path:
        return find_model(self.models_dir, base_model)

    async def create_job(self, tenant: str, spec: JobSpec) -> JobRecord:
        job = await self._blocking(self._create_job, tenant, spec)
        self.runner.wake()
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
        if not await self._blocking(self.runner.finish_cancelled, job_id, None):
            await self.runner.stop_for_cancel(job_id)
        return await self._blocking(self.store.get_job, tenant, job_id)

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
