"""Calls to the registry and retrieval services, as this service acting for a tenant.

Every call has a deadline; the other service's status and message come back as the
same domain error, so a tenant asking for another tenant's adapter still sees NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from loraplex.adapter_transfer import IntegrityError, VerifiedFolder
from loraplex.registry.v1 import registry_service_pb2 as reg_pb
from loraplex.registry.v1 import registry_service_pb2_grpc as reg_grpc
from loraplex.retrieval.v1 import retrieval_service_pb2 as ret_pb
from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as ret_grpc
from services.common import errors
from services.common.channels import acting_for

_BY_CODE = {
    cls.code: cls
    for cls in (
        errors.InvalidArgument,
        errors.NotFound,
        errors.FailedPrecondition,
        errors.PermissionDenied,
        errors.ResourceExhausted,
        errors.DeadlineExceeded,
        errors.DataLoss,
    )
}


def translate(error: grpc.aio.AioRpcError, service: str) -> errors.LoraplexError:
    cls = _BY_CODE.get(error.code())
    if cls is not None:
        return cls(error.details() or f"{service} said {error.code().name}")
    if error.code() == grpc.StatusCode.UNAUTHENTICATED:
        return errors.Unavailable(f"{service} does not accept this service's key")
    return errors.Unavailable(f"{service} is unavailable ({error.code().name}); retry shortly")


class RegistryGateway:
    def __init__(self, channel: grpc.aio.Channel, service_key: str, timeout: float) -> None:
        self.stub = reg_grpc.RegistryServiceStub(channel)
        self.service_key = service_key
        self.timeout = timeout

    async def check(
        self,
        tenant: str,
        ref: str,
        base_model: str,
        max_rank: int,
        modules: tuple[str, ...],
    ) -> reg_pb.AdapterVersion:
        request = reg_pb.CheckCompatibilityRequest(
            ref=ref,
            base_model=base_model,
            max_rank=max_rank,
            available_modules=list(modules),
            supported_peft_types=["LORA"],
        )
        try:
            reply = await self.stub.CheckCompatibility(
                request, metadata=acting_for(self.service_key, tenant), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error, "registry") from None
        return reply.version

    async def download(self, tenant: str, ref: str, dest: Path) -> reg_pb.AdapterVersion:
        """Writes the version's files into `dest`, each checked against its sha256."""
        call = self.stub.DownloadAdapter(
            reg_pb.DownloadAdapterRequest(ref=ref),
            metadata=acting_for(self.service_key, tenant),
            timeout=self.timeout,
        )
        files: VerifiedFolder | None = None
        try:
            async for message in call:
                if message.HasField("version"):
                    files = VerifiedFolder(message.version, dest)
                elif files is None:
                    raise errors.DataLoss("registry sent file bytes before the version header")
                else:
                    files.write(message.chunk.path, message.chunk.data)
            if files is None:
                raise errors.DataLoss("registry sent no version header")
            files.finish()
        except grpc.aio.AioRpcError as error:
            raise translate(error, "registry") from None
        except IntegrityError as error:
            raise errors.DataLoss(str(error)) from None
        return files.version

    async def watch(self, tenant: str) -> AsyncIterator[reg_pb.WatchAdaptersResponse]:
        call = self.stub.WatchAdapters(
            reg_pb.WatchAdaptersRequest(include_current=True),
            metadata=acting_for(self.service_key, tenant),
        )
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as error:
            raise translate(error, "registry") from None
        finally:
            call.cancel()


class RetrievalGateway:
    def __init__(self, channel: grpc.aio.Channel, service_key: str, timeout: float) -> None:
        self.stub = ret_grpc.RetrievalServiceStub(channel)
        self.service_key = service_key
        self.timeout = timeout

    async def search(
        self, tenant: str, request: ret_pb.SearchChunksRequest
    ) -> ret_pb.SearchChunksResponse:
        try:
            return await self.stub.SearchChunks(
                request, metadata=acting_for(self.service_key, tenant), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise translate(error, "retrieval") from None
