"""Calls to the registry and retrieval services, as this service acting for a tenant.

Every call goes through the kit's `Remote` (services/common/calls.py): a deadline, retries
on UNAVAILABLE, and the other service's status and message back as the same domain
error, so a tenant asking for another tenant's adapter still sees NOT_FOUND. Replies
come back as the records in services.inference.records: no protobuf past here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC
from pathlib import Path

import grpc

from loraplex.adapter_transfer import IntegrityError, VerifiedFolder
from loraplex.registry.v1 import registry_service_pb2 as reg_pb
from loraplex.registry.v1 import registry_service_pb2_grpc as reg_grpc
from loraplex.retrieval.v1 import retrieval_service_pb2 as ret_pb
from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as ret_grpc
from services.common import errors
from services.common.adapter_ref import AdapterRef, parse_name
from services.common.auth import AUTHORIZATION_HEADER
from services.common.calls import Remote, translate
from services.common.context import new_request_id
from services.common.interceptors import REQUEST_ID_HEADER
from services.inference.catalog import AdapterListing
from services.inference.records import (
    AdapterEvent,
    AdapterEventKind,
    AdapterVersionInfo,
    ChunkSearch,
    EngineRequirements,
    MetadataFilter,
    RetrievedChunk,
    SearchResult,
)


def _version_info(message: reg_pb.AdapterVersion) -> AdapterVersionInfo:
    return AdapterVersionInfo(
        parse_name(message.name), message.version, message.digest, message.size_bytes
    )


_EVENT_KINDS = {
    reg_pb.ADAPTER_EVENT_KIND_VERSION_PUSHED: AdapterEventKind.VERSION_PUSHED,
    reg_pb.ADAPTER_EVENT_KIND_VERSION_DELETED: AdapterEventKind.VERSION_DELETED,
    reg_pb.ADAPTER_EVENT_KIND_ALIAS_SET: AdapterEventKind.ALIAS_SET,
    reg_pb.ADAPTER_EVENT_KIND_ALIAS_DELETED: AdapterEventKind.ALIAS_DELETED,
}


def _event(message: reg_pb.WatchAdaptersResponse) -> AdapterEvent | None:
    kind = _EVENT_KINDS.get(message.kind)
    if kind is None:
        return None  # a kind newer than this replica: nothing to do with it
    return AdapterEvent(
        kind=kind,
        name=parse_name(message.name),
        version=message.version,
        alias=message.alias,
        previous_version=message.previous_version,
        effective_at=message.effective_at.ToDatetime(tzinfo=UTC).timestamp(),
    )


class RegistryGateway:
    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.stub = remote.stub(reg_grpc.RegistryServiceStub)

    async def resolve(
        self, tenant: str, ref: AdapterRef, needs: EngineRequirements
    ) -> AdapterVersionInfo:
        """The version `ref` names now, refused (FAILED_PRECONDITION) unless the engine fits it."""
        request = reg_pb.CheckCompatibilityRequest(
            ref=str(ref),
            base_model=needs.base_model,
            max_rank=needs.max_rank,
            available_modules=list(needs.modules),
            supported_peft_types=list(needs.peft_types),
        )
        reply = await self.remote.call(self.stub.CheckCompatibility, request, tenant)
        return _version_info(reply.version)

    async def fetch(
        self,
        tenant: str,
        ref: AdapterRef,
        needs: EngineRequirements,
        dest: Path,
        wanted: Callable[[AdapterVersionInfo], bool],
    ) -> tuple[AdapterVersionInfo, bool]:
        """A cold load in one call: the registry resolves `ref`, checks the engine's needs
        (FAILED_PRECONDITION) and streams the files into `dest`. After the header,
        `wanted(version)` False cancels the call: the bytes are here already."""
        request = reg_pb.DownloadAdapterRequest(
            ref=str(ref),
            base_model=needs.base_model,
            max_rank=needs.max_rank,
            available_modules=list(needs.modules),
            supported_peft_types=list(needs.peft_types),
        )
        return await self._receive(tenant, request, dest, wanted)

    async def list_adapters(self, tenant: str, base_model: str, limit: int) -> list[AdapterListing]:
        """The tenant's adapters whose newest version was trained on `base_model`."""
        listings: list[AdapterListing] = []
        token = ""
        while len(listings) < limit:
            request = reg_pb.ListAdaptersRequest(
                page_size=500, page_token=token, base_model=base_model
            )
            reply = await self.remote.call(self.stub.ListAdapters, request, tenant)
            listings += [
                AdapterListing(
                    a.name,
                    a.latest.version,
                    a.latest.created_at.ToDatetime(tzinfo=UTC).timestamp(),
                    dict(a.aliases),
                )
                for a in reply.adapters
            ]
            token = reply.next_page_token
            if not token:
                break
        return listings[:limit]

    async def describe(self, tenant: str, ref: AdapterRef) -> AdapterListing:
        """The version `ref` names now (NOT_FOUND when absent or another tenant's)."""
        request = reg_pb.GetAdapterRequest(ref=str(ref))
        version = (await self.remote.call(self.stub.GetAdapter, request, tenant)).version
        created = version.created_at.ToDatetime(tzinfo=UTC).timestamp()
        return AdapterListing(version.name, version.version, created, {})

    async def download(self, tenant: str, version: AdapterVersionInfo, dest: Path) -> None:
        """Writes exactly `version`'s files into `dest`, each checked against its sha256."""

        def same(sent: AdapterVersionInfo) -> bool:
            if sent != version:
                raise errors.DataLoss(
                    f"registry sent another content for {version} than it resolved; retry"
                )
            return True

        await self._receive(tenant, reg_pb.DownloadAdapterRequest(ref=str(version.ref)), dest, same)

    async def _receive(
        self,
        tenant: str,
        request: reg_pb.DownloadAdapterRequest,
        dest: Path,
        wanted: Callable[[AdapterVersionInfo], bool],
    ) -> tuple[AdapterVersionInfo, bool]:
        info: AdapterVersionInfo | None = None
        files: VerifiedFolder | None = None
        stream = self.remote.stream(self.stub.DownloadAdapter, request, tenant)
        try:
            async for message in stream:
                if message.HasField("version"):
                    info = _version_info(message.version)
                    if not wanted(info):
                        return info, False
                    files = VerifiedFolder(message.version, dest)
                elif files is None:
                    raise errors.DataLoss("registry sent file bytes before the version header")
                else:
                    files.write(message.chunk.path, message.chunk.data)
            if files is None or info is None:
                raise errors.DataLoss("registry sent no version header")
            files.finish()
            return info, True
        except IntegrityError as error:
            raise errors.DataLoss(str(error)) from None
        finally:
            await stream.aclose()  # cancels the call when we stop early

    async def watch_tenants(
        self, additions: AsyncIterator[tuple[list[str], bool]]
    ) -> AsyncIterator[AdapterEvent]:
        """One stream of the events of every tenant named on `additions` (tenants, and
        whether to send their current aliases first), as this service acting for no tenant."""
        requests = (
            reg_pb.WatchTenantAdaptersRequest(tenants=tenants, include_current=current)
            async for tenants, current in additions
        )
        # Its own request id: the stream outlives whichever request first needed it. Not
        # retried here: TenantWatch reconnects and names its tenants again.
        metadata = (
            (AUTHORIZATION_HEADER, f"Bearer {self.remote.service_key}"),
            (REQUEST_ID_HEADER, f"watch-{new_request_id()}"),
        )
        call = self.stub.WatchTenantAdapters(requests, metadata=metadata)
        try:
            async for message in call:
                event = _event(message.event)
                if event is not None:
                    yield event
        except grpc.aio.AioRpcError as error:
            raise translate(error, "registry") from None
        finally:
            call.cancel()


def _chunk(message: ret_pb.ScoredChunk) -> RetrievedChunk:
    return RetrievedChunk(
        document_id=message.document_id,
        text=message.text,
        chunk_index=message.chunk_index,
        start_char=message.start_char,
        end_char=message.end_char,
        score=message.score,
        source_uri=message.source.uri,
        source_title=message.source.title,
        metadata=dict(message.metadata),
    )


def _filter(record: MetadataFilter) -> ret_pb.MetadataFilter:
    message = ret_pb.MetadataFilter()
    for cond in record.conditions:
        out = message.conditions.add(key=cond.key)
        if len(cond.values) == 1:
            out.equals = cond.values[0]
        elif cond.values:
            getattr(out, "in").values.extend(cond.values)
    return message


class RetrievalGateway:
    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.stub = remote.stub(ret_grpc.RetrievalServiceStub)

    async def search(self, tenant: str, search: ChunkSearch) -> SearchResult:
        request = ret_pb.SearchChunksRequest(
            collection=search.collection,
            query=search.query,
            top_k=search.top_k,
            min_score=search.min_score,  # None leaves it unset: keep every hit
            mode=ret_pb.SEARCH_MODE_HYBRID if search.hybrid else ret_pb.SEARCH_MODE_DENSE,
        )
        if search.filter is not None:
            request.filter.CopyFrom(_filter(search.filter))
        reply = await self.remote.call(self.stub.SearchChunks, request, tenant)
        return SearchResult(tuple(_chunk(c) for c in reply.chunks), reply.revision)
