"""gRPC edge of the registry: protobuf in, core call, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from loraplex.registry.v1 import registry_service_pb2 as pb
from loraplex.registry.v1 import registry_service_pb2_grpc as pb_grpc
from services.common.context import current_service, current_tenant
from services.common.errors import InvalidArgument
from services.common.kit import Servicer
from services.registry import convert
from services.registry.registry import Registry


async def _chunks(
    requests: AsyncIterator[pb.PushAdapterRequest],
) -> AsyncIterator[tuple[str, bytes]]:
    async for request in requests:
        if not request.HasField("chunk"):
            raise InvalidArgument("only file chunks may follow the push header")
        yield request.chunk.path, request.chunk.data


class RegistryServicer(pb_grpc.RegistryServiceServicer, Servicer[Registry]):
    """Registered before the server starts; the kit attaches the core once it is loaded."""

    async def PushAdapter(
        self,
        request_iterator: AsyncIterator[pb.PushAdapterRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.PushAdapterResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("a push starts with a header message")
        header = convert.push_header(first.header)
        record = await self.core.push(current_tenant(), header, _chunks(request_iterator))
        return pb.PushAdapterResponse(version=convert.version(record))

    async def GetAdapter(self, request: pb.GetAdapterRequest, context) -> pb.GetAdapterResponse:
        record = await self.core.get(current_tenant(), request.ref)
        return pb.GetAdapterResponse(version=convert.version(record))

    async def ListAdapters(
        self, request: pb.ListAdaptersRequest, context
    ) -> pb.ListAdaptersResponse:
        items, token = await self.core.list_adapters(
            current_tenant(), request.page_size, request.page_token, request.base_model
        )
        return pb.ListAdaptersResponse(
            adapters=[convert.summary(s) for s in items], next_page_token=token
        )

    async def ListAdapterVersions(
        self, request: pb.ListAdapterVersionsRequest, context
    ) -> pb.ListAdapterVersionsResponse:
        items, token = await self.core.list_versions(
            current_tenant(), request.name, request.page_size, request.page_token
        )
        return pb.ListAdapterVersionsResponse(
            versions=[convert.version(v) for v in items], next_page_token=token
        )

    async def DownloadAdapter(
        self, request: pb.DownloadAdapterRequest, context
    ) -> AsyncIterator[pb.DownloadAdapterResponse]:
        record, chunks = await self.core.download(
            current_tenant(), request.ref, convert.requirements(request)
        )
        yield pb.DownloadAdapterResponse(version=convert.version(record))
        async for path, data in chunks:
            yield pb.DownloadAdapterResponse(chunk=pb.FileChunk(path=path, data=data))

    async def SetAlias(self, request: pb.SetAliasRequest, context) -> pb.SetAliasResponse:
        record = await self.core.set_alias(
            current_tenant(), request.name, request.alias, request.version, request.stage_seconds
        )
        return pb.SetAliasResponse(alias=convert.alias(record))

    async def DeleteAlias(self, request: pb.DeleteAliasRequest, context) -> pb.DeleteAliasResponse:
        await self.core.delete_alias(current_tenant(), request.name, request.alias)
        return pb.DeleteAliasResponse()

    async def DeleteAdapter(
        self, request: pb.DeleteAdapterRequest, context
    ) -> pb.DeleteAdapterResponse:
        deleted = await self.core.delete(
            current_tenant(), request.name, request.version, request.force
        )
        return pb.DeleteAdapterResponse(deleted_versions=deleted)

    async def CheckCompatibility(
        self, request: pb.CheckCompatibilityRequest, context
    ) -> pb.CheckCompatibilityResponse:
        record = await self.core.check_compatibility(
            current_tenant(), request.ref, convert.requirements(request)
        )
        return pb.CheckCompatibilityResponse(version=convert.version(record))

    async def WatchAdapters(
        self, request: pb.WatchAdaptersRequest, context
    ) -> AsyncIterator[pb.WatchAdaptersResponse]:
        if request.after_sequence < 0:
            raise InvalidArgument("after_sequence must not be negative")
        events = self.core.watch(
            current_tenant(), request.name, request.after_sequence, request.include_current
        )
        async for record in events:
            yield convert.event(record)

    async def WatchTenantAdapters(
        self, request_iterator: AsyncIterator[pb.WatchTenantAdaptersRequest], context
    ) -> AsyncIterator[pb.WatchTenantAdaptersResponse]:
        current_service()
        additions = (
            (list(request.tenants), request.include_current) async for request in request_iterator
        )
        async for record in self.core.watch_tenants(additions):
            yield pb.WatchTenantAdaptersResponse(event=convert.event(record))
