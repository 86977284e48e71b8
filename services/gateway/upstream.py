"""Calls to training and retrieval, as the gateway acting for the calling tenant.

On the kit's `Remote`: a deadline per call, retries on UNAVAILABLE, and the other
service's answer back as the same domain error, so another tenant's collection or
job is NOT_FOUND here exactly as it is there. The services' scopes let the
`gateway` service key call only the RPCs below.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

from loraplex.retrieval.v1 import retrieval_service_pb2 as ret_pb
from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as ret_grpc
from loraplex.training.v1 import training_service_pb2 as tr_pb
from loraplex.training.v1 import training_service_pb2_grpc as tr_grpc
from services.common.calls import Remote

CHUNK_BYTES = 256 * 1024
#: Documents per upsert message.
UPSERT_BATCH = 16


class TrainingUpstream:
    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.stub = remote.stub(tr_grpc.TrainingServiceStub)

    async def upload(self, tenant: str, name: str, data: bytes) -> tr_pb.Dataset:
        header = tr_pb.DatasetHeader(
            name=name, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
        )

        def requests() -> AsyncIterator[tr_pb.UploadDatasetRequest]:
            async def gen() -> AsyncIterator[tr_pb.UploadDatasetRequest]:
                yield tr_pb.UploadDatasetRequest(header=header)
                for start in range(0, len(data), CHUNK_BYTES):
                    yield tr_pb.UploadDatasetRequest(data=data[start : start + CHUNK_BYTES])

            return gen()

        reply = await self.remote.call(self.stub.UploadDataset, requests, tenant)
        return reply.dataset

    async def create_job(self, tenant: str, spec: tr_pb.JobSpec) -> tr_pb.Job:
        request = tr_pb.CreateJobRequest(spec=spec)
        return (await self.remote.call(self.stub.CreateJob, request, tenant, retry=False)).job

    async def get_job(self, tenant: str, job_id: str) -> tr_pb.Job:
        return (
            await self.remote.call(self.stub.GetJob, tr_pb.GetJobRequest(id=job_id), tenant)
        ).job

    async def list_jobs(self, tenant: str, page_size: int, token: str) -> tr_pb.ListJobsResponse:
        request = tr_pb.ListJobsRequest(page_size=page_size, page_token=token)
        return await self.remote.call(self.stub.ListJobs, request, tenant)

    async def cancel_job(self, tenant: str, job_id: str) -> tr_pb.Job:
        request = tr_pb.CancelJobRequest(id=job_id)
        return (await self.remote.call(self.stub.CancelJob, request, tenant)).job

    async def events(self, tenant: str, job_id: str) -> list[tr_pb.StreamJobEventsResponse]:
        """The job's history so far (no live tail)."""
        request = tr_pb.StreamJobEventsRequest(id=job_id, history_only=True)
        return [e async for e in self.remote.stream(self.stub.StreamJobEvents, request, tenant)]


class RetrievalUpstream:
    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.stub = remote.stub(ret_grpc.RetrievalServiceStub)

    async def create(self, tenant: str, name: str) -> ret_pb.Collection:
        request = ret_pb.CreateCollectionRequest(name=name)
        reply = await self.remote.call(self.stub.CreateCollection, request, tenant, retry=False)
        return reply.collection

    async def get(self, tenant: str, name: str) -> ret_pb.Collection:
        request = ret_pb.GetCollectionRequest(name=name)
        return (await self.remote.call(self.stub.GetCollection, request, tenant)).collection

    async def stats(self, tenant: str, name: str) -> ret_pb.GetCollectionStatsResponse:
        request = ret_pb.GetCollectionStatsRequest(name=name)
        return await self.remote.call(self.stub.GetCollectionStats, request, tenant)

    async def list(self, tenant: str, page_size: int, token: str) -> ret_pb.ListCollectionsResponse:
        request = ret_pb.ListCollectionsRequest(page_size=page_size, page_token=token)
        return await self.remote.call(self.stub.ListCollections, request, tenant)

    async def delete(self, tenant: str, name: str) -> None:
        request = ret_pb.DeleteCollectionRequest(name=name)
        await self.remote.call(self.stub.DeleteCollection, request, tenant)

    async def upsert(self, tenant: str, name: str, documents: list[ret_pb.Document]) -> int:
        """Writes the documents; returns the collection's revision once they are searchable."""

        async def requests() -> AsyncIterator[ret_pb.UpsertDocumentsRequest]:
            for start in range(0, len(documents), UPSERT_BATCH):
                batch = documents[start : start + UPSERT_BATCH]
                yield ret_pb.UpsertDocumentsRequest(collection=name, documents=batch)

        revision = 0
        stream = self.remote.stream(self.stub.UpsertDocuments, requests(), tenant)
        async for progress in stream:
            revision = progress.revision or revision
        return revision

    async def delete_documents(self, tenant: str, name: str, ids: list[str]) -> int:
        request = ret_pb.DeleteDocumentsRequest(collection=name, document_ids=ids)
        return (await self.remote.call(self.stub.DeleteDocuments, request, tenant)).revision

    async def search(
        self, tenant: str, request: ret_pb.SearchChunksRequest
    ) -> ret_pb.SearchChunksResponse:
        return await self.remote.call(self.stub.SearchChunks, request, tenant)

    async def embed(self, tenant: str, texts: list[str], model: str) -> ret_pb.EmbedTextsResponse:
        request = ret_pb.EmbedTextsRequest(texts=texts, embedding_model=model)
        return await self.remote.call(self.stub.EmbedTexts, request, tenant)
