"""gRPC edge of the training service: protobuf in, core calls, protobuf out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from loraplex.training.v1 import training_service_pb2 as pb
from loraplex.training.v1 import training_service_pb2_grpc as pb_grpc
from services.common.context import current_tenant
from services.common.errors import InvalidArgument, Unavailable
from services.training import convert
from services.training.jobs import JobManager
from services.training.uploads import DatasetManager


class TrainingServicer(pb_grpc.TrainingServiceServicer):
    def __init__(self) -> None:
        self._jobs: JobManager | None = None
        self._datasets: DatasetManager | None = None

    def attach(self, jobs: JobManager, datasets: DatasetManager) -> None:
        self._jobs, self._datasets = jobs, datasets

    @property
    def jobs(self) -> JobManager:
        if self._jobs is None:
            raise Unavailable("the training service is starting; retry shortly")
        return self._jobs

    @property
    def datasets(self) -> DatasetManager:
        if self._datasets is None:
            raise Unavailable("the training service is starting; retry shortly")
        return self._datasets

    async def UploadDataset(
        self,
        request_iterator: AsyncIterator[pb.UploadDatasetRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadDatasetResponse:
        tenant = current_tenant()
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("the first upload message must be the header")
        header = first.header
        fmt = convert.FORMAT_FROM_PB.get(header.format, "")
        upload = await asyncio.to_thread(
            self.datasets.begin, tenant, header.name, fmt, header.size_bytes, header.sha256
        )
        try:
            async for message in request_iterator:
                if message.HasField("header"):
                    raise InvalidArgument("only the first upload message may be a header")
                upload.write(message.data)
        except BaseException:
            upload.abort()
            raise
        record = await asyncio.to_thread(self.datasets.finish, upload)
        return pb.UploadDatasetResponse(dataset=convert.dataset_to_pb(record))

    async def GetDataset(
        self, request: pb.GetDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDatasetResponse:
        record = self.datasets.store.get_dataset(current_tenant(), request.id)
        return pb.GetDatasetResponse(dataset=convert.dataset_to_pb(record))

    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDatasetsResponse:
        records, token = self.datasets.store.list_datasets(
            current_tenant(), request.page_size, request.page_token
        )
        return pb.ListDatasetsResponse(
            datasets=[convert.dataset_to_pb(r) for r in records], next_page_token=token
        )

    async def CreateJob(
        self, request: pb.CreateJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateJobResponse:
        job = self.jobs.create_job(current_tenant(), convert.spec_from_pb(request.spec))
        return pb.CreateJobResponse(job=convert.job_to_pb(job))

    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetJobResponse:
        return pb.GetJobResponse(
            job=convert.job_to_pb(self.jobs.get_job(current_tenant(), request.id))
        )

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        jobs, token = self.jobs.list_jobs(current_tenant(), request.page_size, request.page_token)
        return pb.ListJobsResponse(jobs=[convert.job_to_pb(j) for j in jobs], next_page_token=token)

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelJobResponse:
        job = self.jobs.cancel_job(current_tenant(), request.id)
        return pb.CancelJobResponse(job=convert.job_to_pb(job))

    async def StreamJobEvents(
        self, request: pb.StreamJobEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamJobEventsResponse]:
        events = self.jobs.events(
            current_tenant(), request.id, request.after_sequence, not request.history_only
        )
        async for event in events:
            yield convert.event_to_pb(event)
