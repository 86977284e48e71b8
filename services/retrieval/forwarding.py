"""Server-side forwarding: a call that reaches a replica that does not serve its tenant
goes on to the replica that does, so clients may call any replica behind one Service.

The call is relayed with the caller's own metadata (its key, the tenant it acts
for, its request id): the owner authenticates and authorizes it exactly as if it
had been called directly, so forwarding grants nothing. A relayed call carries
`x-loraplex-forwarded-by` and is always served where it lands, so calls never loop.
Replicas ranked above this one are tried in order; one that cannot be reached
(dead, not yet ready) is skipped, and when none answers this replica serves the
call itself: the index mirrors the database, so any replica answers correctly,
the owner only answers from memory it already holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import Message

from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from services.common.calls import translate
from services.common.channels import open_channel
from services.common.context import current_tenant
from services.common.settings import ClientTlsSettings
from services.retrieval.membership import Member, Membership
from services.retrieval.metrics import FORWARDED

log = logging.getLogger(__name__)

FORWARDED_HEADER = "x-loraplex-forwarded-by"
_SERVICE = pb.DESCRIPTOR.services_by_name["RetrievalService"].full_name
#: Transport headers the relayed call sets itself.
_HOP_HEADERS = {"user-agent", "content-type", "te", "grpc-timeout", "grpc-encoding"}
#: How long a peer may take to accept a connection before the next one is tried.
CONNECT_SECONDS = 1.0


class Forwarder:
    """One channel per peer, opened on first use."""

    def __init__(self, membership: Membership, tls: ClientTlsSettings) -> None:
        self.membership = membership
        self.tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}
        #: Replicas found unreachable, skipped until then (monotonic seconds): until
        #: their lease lapses, calls go straight to the next in line.
        self._suspect: dict[str, float] = {}

    def _targets(self, context: grpc.aio.ServicerContext) -> list[Member]:
        if not self.membership.enabled:
            return []
        metadata = context.invocation_metadata() or ()
        if any(key == FORWARDED_HEADER for key, _ in metadata):
            return []
        moment = time.monotonic()
        return [
            m
            for m in self.membership.ahead_of_me(current_tenant())
            if self._suspect.get(m.id, 0.0) <= moment
        ]

    def _metadata(self, context: grpc.aio.ServicerContext) -> list[tuple[str, Any]]:
        relayed = [
            (key, value)
            for key, value in context.invocation_metadata() or ()
            if not key.startswith(":") and key not in _HOP_HEADERS
        ]
        return [*relayed, (FORWARDED_HEADER, self.membership.me.id)]

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(address, self.tls)
        return channel

    async def _reachable(self, member: Member) -> grpc.aio.Channel | None:
        channel = self._channel(member.address)
        try:
            await asyncio.wait_for(channel.channel_ready(), CONNECT_SECONDS)
            return channel
        except (TimeoutError, grpc.aio.AioRpcError):
            log.warning("replica %s at %s unreachable; trying the next", member.id, member.address)
            self._suspect[member.id] = time.monotonic() + self.membership.settings.lease_seconds
            return None

    async def unary(
        self,
        rpc: str,
        request: Message,
        response: type[Message],
        context: grpc.aio.ServicerContext,
    ) -> Message | None:
        """The owner's answer, or None when this replica should serve the call itself."""
        for member in self._targets(context):
            channel = await self._reachable(member)
            if channel is None:
                continue
            call = channel.unary_unary(
                f"/{_SERVICE}/{rpc}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response.FromString,
            )
            try:
                reply = await call(
                    request, metadata=self._metadata(context), timeout=context.time_remaining()
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    log.warning("replica %s unavailable for %s; trying the next", member.id, rpc)
                    self._suspect[member.id] = (
                        time.monotonic() + self.membership.settings.lease_seconds
                    )
                    continue
                raise translate(exc, "retrieval replica") from None
            FORWARDED.labels(rpc).inc()
            return reply
        return None

    async def stream(
        self,
        rpc: str,
        requests: AsyncIterator[Message],
        response: type[Message],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[Message] | None:
        """A streamed call relayed to the first reachable replica ahead of this one, or
        None (serve it here). Not retried once relayed: its messages are consumed."""
        for member in self._targets(context):
            channel = await self._reachable(member)
            if channel is None:
                continue
            call = channel.stream_stream(
                f"/{_SERVICE}/{rpc}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response.FromString,
            )
            FORWARDED.labels(rpc).inc()
            return self._relay(
                call(requests, metadata=self._metadata(context), timeout=context.time_remaining())
            )
        return None

    @staticmethod
    async def _relay(call: Any) -> AsyncIterator[Message]:
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise translate(exc, "retrieval replica") from None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
