"""gRPC edge of the training service: protobuf in, core calls, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from loraplex.training.v1 import training_service_pb2 as pb
from loraplex.training.v1 import training_service_pb2_grpc as pb_grpc
from services.common.context import current_tenant
from services.common.errors import InvalidArgument
from services.common.kit import Servicer
from services.training import convert
from services.training.jobs import JobManager


class TrainingServicer(pb_grpc.TrainingServiceServicer, Servicer[JobManager]):
    """Registered before the server starts; the kit attaches the core once it is loaded."""

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
        record = await self.core.upload_dataset(
            tenant, header.name, fmt, header.size_bytes, header.sha256, _data(request_iterator)
        )
        return pb.UploadDatasetResponse(dataset=convert.dataset_to_pb(record))

    async def GetDataset(
        self, request: pb.GetDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDatasetResponse:
        record = await self.core.get_dataset(current_tenant(), request.id)
        return pb.GetDatasetResponse(dataset=convert.dataset_to_pb(record))

    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDatasetsResponse:
        records, token = await self.core.list_datasets(
            current_tenant(), request.page_size, request.page_token
        )
        return pb.ListDatasetsResponse(
            datasets=[convert.dataset_to_pb(r) for r in records], next_page_token=token
        )

    async def CreateJob(
        self, request: pb.CreateJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateJobResponse:
        job = await self.core.create_job(current_tenant(), convert.spec_from_pb(request.spec))
        return pb.CreateJobResponse(job=convert.job_to_pb(job))

    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetJobResponse:
        job = await self.core.get_job(current_tenant(), request.id)
        return pb.GetJobResponse(job=convert.job_to_pb(job))

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListJobsResponse:
        jobs, token = await self.core.list_jobs(
            current_tenant(), request.page_size, request.page_token
        )
        return pb.ListJobsResponse(jobs=[convert.job_to_pb(j) for j in jobs], next_page_token=token)

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelJobResponse:
        job = await self.core.cancel_job(current_tenant(), request.id)
        return pb.CancelJobResponse(job=convert.job_to_pb(job))

    async def StreamJobEvents(
        self, request: pb.StreamJobEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamJobEventsResponse]:
        events = self.core.events(
            current_tenant(), request.id, request.after_sequence, not request.history_only
        )
        async for event in events:
            yield convert.event_to_pb(event)


async def _data(requests: AsyncIterator[pb.UploadDatasetRequest]) -> AsyncIterator[bytes]:
    async for message in requests:
        if message.HasField("header"):
            raise InvalidArgument("only the first upload message may be a header")
        yield message.data
