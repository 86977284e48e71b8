"""gRPC edge of the registry: protobuf in, core call, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from loraplex.registry.v1 import registry_service_pb2 as pb
from loraplex.registry.v1 import registry_service_pb2_grpc as pb_grpc
from services.common.context import current_service, current_tenant
from services.common.errors import InvalidArgument, Unavailable
from services.common.paging import decode_token, encode_token, page_size
from services.registry import convert
from services.registry.registry import Registry

_BAD_TOKEN = "page_token is not one this server issued; start again without it"
_MAX_VERSION = 2**31 - 1


def _after_name(token: str) -> str:
    """ListAdapters' token: the last adapter name of the previous page."""
    if not token:
        return ""
    name = decode_token(token)
    if not isinstance(name, str) or not 0 < len(name) <= 128:
        raise InvalidArgument(_BAD_TOKEN)
    return name


def _before_version(token: str) -> int:
    """ListAdapterVersions' token: the last version number of the previous page."""
    if not token:
        return 0
    version = decode_token(token)
    if type(version) is not int or not 1 <= version <= _MAX_VERSION:
        raise InvalidArgument(_BAD_TOKEN)
    return version


async def _chunks(
    requests: AsyncIterator[pb.PushAdapterRequest],
) -> AsyncIterator[tuple[str, bytes]]:
    async for request in requests:
        if not request.HasField("chunk"):
            raise InvalidArgument("only file chunks may follow the push header")
        yield request.chunk.path, request.chunk.data


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    """Registered before the server starts; serves once the app attaches the core."""

    def __init__(self) -> None:
        self._registry: Registry | None = None

    def attach(self, registry: Registry) -> None:
        self._registry = registry

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise Unavailable("the registry is starting; retry shortly")
        return self._registry

    async def PushAdapter(
        self,
        request_iterator: AsyncIterator[pb.PushAdapterRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.PushAdapterResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument("a push starts with a header message")
        header = convert.push_header(first.header)
        record = await self.registry.push(current_tenant(), header, _chunks(request_iterator))
        return pb.PushAdapterResponse(version=convert.version(record))

    async def GetAdapter(self, request: pb.GetAdapterRequest, context) -> pb.GetAdapterResponse:
        record = await self.registry.get(current_tenant(), request.ref)
        return pb.GetAdapterResponse(version=convert.version(record))

    async def ListAdapters(
        self, request: pb.ListAdaptersRequest, context
    ) -> pb.ListAdaptersResponse:
        size = page_size(request.page_size)
        after = _after_name(request.page_token)
        items = await self.registry.list_adapters(
            current_tenant(), after, size + 1, request.base_model
        )
        token = encode_token(str(items[size - 1].name.name)) if len(items) > size else ""
        return pb.ListAdaptersResponse(
            adapters=[convert.summary(s) for s in items[:size]], next_page_token=token
        )

    async def ListAdapterVersions(
        self, request: pb.ListAdapterVersionsRequest, context
    ) -> pb.ListAdapterVersionsResponse:
        size = page_size(request.page_size)
        before = _before_version(request.page_token)
        items = await self.registry.list_versions(current_tenant(), request.name, before, size + 1)
        token = encode_token(items[size - 1].version) if len(items) > size else ""
        return pb.ListAdapterVersionsResponse(
            versions=[convert.version(v) for v in items[:size]], next_page_token=token
        )

    async def DownloadAdapter(
        self, request: pb.DownloadAdapterRequest, context
    ) -> AsyncIterator[pb.DownloadAdapterResponse]:
        record, chunks = await self.registry.download(current_tenant(), request.ref)
        yield pb.DownloadAdapterResponse(version=convert.version(record))
        async for path, data in chunks:
            yield pb.DownloadAdapterResponse(chunk=pb.FileChunk(path=path, data=data))

    async def SetAlias(self, request: pb.SetAliasRequest, context) -> pb.SetAliasResponse:
        record = await self.registry.set_alias(
            current_tenant(), request.name, request.alias, request.version, request.stage_seconds
        )
        return pb.SetAliasResponse(alias=convert.alias(record))

    async def DeleteAlias(self, request: pb.DeleteAliasRequest, context) -> pb.DeleteAliasResponse:
        await self.registry.delete_alias(current_tenant(), request.name, request.alias)
        return pb.DeleteAliasResponse()

    async def DeleteAdapter(
        self, request: pb.DeleteAdapterRequest, context
    ) -> pb.DeleteAdapterResponse:
        deleted = await self.registry.delete(
            current_tenant(), request.name, request.version, request.force
        )
        return pb.DeleteAdapterResponse(deleted_versions=deleted)

    async def CheckCompatibility(
        self, request: pb.CheckCompatibilityRequest, context
    ) -> pb.CheckCompatibilityResponse:
        record = await self.registry.check_compatibility(
            current_tenant(),
            request.ref,
            request.base_model,
            request.max_rank,
            list(request.available_modules),
            list(request.supported_peft_types),
        )
        return pb.CheckCompatibilityResponse(version=convert.version(record))

    async def WatchAdapters(
        self, request: pb.WatchAdaptersRequest, context
    ) -> AsyncIterator[pb.WatchAdaptersResponse]:
        if request.after_sequence < 0:
            raise InvalidArgument("after_sequence must not be negative")
        events = self.registry.watch(
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
        async for record in self.registry.watch_tenants(additions):
            yield pb.WatchTenantAdaptersResponse(event=convert.event(record))
