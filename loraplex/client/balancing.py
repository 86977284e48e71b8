"""A channel over every replica of a service that sends each call where its adapter is warm.

gRPC's own `round_robin` spreads calls but knows nothing of adapters, and Python
gRPC has no custom load-balancing policies; so the SDK opens one channel per replica
and picks per call with `loraplex.routing.ReplicaPicker`: a call naming an adapter goes
to the adapter's rendezvous-hash home unless that replica carries more than its share
of the calls in flight, a call without one goes round-robin. The replicas are a
static list (`127.0.0.1:50054,127.0.0.1:50064`) or every A/AAAA record of a
`dns:///name:port` target (a Kubernetes headless Service), looked up again every
`refresh_seconds` so replicas the autoscaler adds get traffic. A replica that answers
UNAVAILABLE is passed over for `down_seconds`, so the client's retry lands elsewhere.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from loraplex.routing import ReplicaPicker, affinity_key, dns_name, replica_list

#: Seconds a replica that answered UNAVAILABLE is passed over while others are up.
DOWN_SECONDS = 5.0
#: Seconds between DNS look-ups of a `dns:///` target's replicas.
REFRESH_SECONDS = 30.0


class ResolutionError(grpc.RpcError):
    """No replica address could be found: raised like the UNAVAILABLE a channel would give."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self._message = message

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._message


def adapter_of(request: Any) -> str | None:
    """The affinity key of an inference request: the adapter it names, if any."""
    for holder in (request, getattr(request, "input", None)):
        value = getattr(holder, "adapter", None) if holder is not None else None
        if isinstance(value, str) and value:
            return affinity_key(value)
    return None


def is_balanced(address: str) -> bool:
    """Whether `address` names several replicas (a list, or a DNS name to look up)."""
    return replica_list(address) is not None or dns_name(address) is not None


def resolve_dns(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, as `ip:port` / `[v6]:port`, sorted."""
    found = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    return sorted(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip in found)


class BalancedChannel(grpc.Channel):
    """A `grpc.Channel` over several replicas; stubs use it like any channel."""

    def __init__(
        self,
        address: str,
        open_one: Callable[[str], grpc.Channel],
        key: Callable[[Any], str | None] = adapter_of,
        spread: int = 1,
        balance_factor: float = 1.25,
        adapters_per_replica: int = 0,
        refresh_seconds: float = REFRESH_SECONDS,
        down_seconds: float = DOWN_SECONDS,
    ) -> None:
        self.address = address
        self._open_one = open_one
        self._key = key
        self._static = replica_list(address)
        self._dns = dns_name(address)
        if self._static is None and self._dns is None:
            raise ValueError(f"{address!r} names one replica; open a plain channel")
        self._spread = spread
        self._balance_factor = balance_factor
        self._adapters_per_replica = adapters_per_replica
        self.refresh_seconds = refresh_seconds
        self.down_seconds = down_seconds
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._callables: dict[tuple[str, str, str], Any] = {}
        self._picker: ReplicaPicker | None = None
        self._resolved_at = 0.0

    @property
    def picker(self) -> ReplicaPicker:
        """The current replica set (looked up first if due)."""
        self._refresh()
        assert self._picker is not None
        return self._picker

    def _refresh(self) -> None:
        if self._picker is not None and (
            self._static is not None or time.monotonic() - self._resolved_at < self.refresh_seconds
        ):
            return
        with self._lock:
            if self._static is not None:
                replicas = list(self._static)
            else:
                assert self._dns is not None
                try:
                    replicas = resolve_dns(*self._dns)
                except OSError as exc:
                    if self._picker is not None:  # keep the last answer through a DNS blip
                        self._resolved_at = time.monotonic()
                        return
                    raise ResolutionError(f"cannot resolve {self.address}: {exc}") from None
            if self._picker is None:
                self._picker = ReplicaPicker(
                    replicas, self._spread, self._balance_factor, self._adapters_per_replica
                )
            else:
                self._picker.update(replicas)
            self._resolved_at = time.monotonic()
            for gone in set(self._channels) - set(replicas):
                self._channels.pop(gone).close()
                self._callables = {k: v for k, v in self._callables.items() if k[0] != gone}

    def _callable(self, replica: str, kind: str, method: str, codecs: tuple) -> Any:
        key = (replica, kind, method)
        found = self._callables.get(key)
        if found is None:
            with self._lock:
                channel = self._channels.get(replica)
                if channel is None:
                    channel = self._channels[replica] = self._open_one(replica)
                found = getattr(channel, kind)(method, *codecs)
                self._callables[key] = found
        return found

    def _begin(self, request: Any) -> str:
        return self.picker.pick(self._key(request) if request is not None else None)

    def _failed(self, replica: str, error: grpc.RpcError) -> None:
        if error.code() == grpc.StatusCode.UNAVAILABLE and self._picker is not None:
            self._picker.mark_down(replica, self.down_seconds)

    def _end(self, replica: str) -> None:
        if self._picker is not None:
            self._picker.done(replica)

    # -- grpc.Channel ---------------------------------------------------------------------

    def unary_unary(self, method, request_serializer=None, response_deserializer=None, *_, **__):
        return _Unary(self, "unary_unary", method, (request_serializer, response_deserializer))

    def stream_unary(self, method, request_serializer=None, response_deserializer=None, *_, **__):
        return _Unary(self, "stream_unary", method, (request_serializer, response_deserializer))

    def unary_stream(self, method, request_serializer=None, response_deserializer=None, *_, **__):
        return _Streamed(self, "unary_stream", method, (request_serializer, response_deserializer))

    def stream_stream(self, method, request_serializer=None, response_deserializer=None, *_, **__):
        return _Streamed(self, "stream_stream", method, (request_serializer, response_deserializer))

    def subscribe(self, callback, try_to_connect=False):
        for channel in list(self._channels.values()):
            channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback):
        for channel in list(self._channels.values()):
            channel.unsubscribe(callback)

    def close(self):
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            self._callables.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _Unary:
    """A unary-response method: one replica per call, counted until the answer."""

    def __init__(self, owner: BalancedChannel, kind: str, method: str, codecs: tuple) -> None:
        self.owner, self.kind, self.method, self.codecs = owner, kind, method, codecs

    def _invoke(self, how: str, request: Any, args: tuple, kwargs: dict) -> Any:
        keyed = request if self.kind == "unary_unary" else None
        replica = self.owner._begin(keyed)
        target = self.owner._callable(replica, self.kind, self.method, self.codecs)
        try:
            call = target if how == "__call__" else getattr(target, how)
            return call(request, *args, **kwargs)
        except grpc.RpcError as error:
            self.owner._failed(replica, error)
            raise
        finally:
            self.owner._end(replica)

    def __call__(self, request, *args, **kwargs):
        return self._invoke("__call__", request, args, kwargs)

    def with_call(self, request, *args, **kwargs):
        return self._invoke("with_call", request, args, kwargs)


class _Streamed:
    """A streamed-response method: the replica counts the call until the stream ends."""

    def __init__(self, owner: BalancedChannel, kind: str, method: str, codecs: tuple) -> None:
        self.owner, self.kind, self.method, self.codecs = owner, kind, method, codecs

    def __call__(self, request, *args, **kwargs) -> _TrackedStream:
        replica = self.owner._begin(request if self.kind == "unary_stream" else None)
        target = self.owner._callable(replica, self.kind, self.method, self.codecs)
        try:
            call = target(request, *args, **kwargs)
        except grpc.RpcError as error:
            self.owner._failed(replica, error)
            self.owner._end(replica)
            raise
        return _TrackedStream(self.owner, replica, call)


class _TrackedStream:
    """The replica's call iterator; releases its in-flight count once, however it ends."""

    def __init__(self, owner: BalancedChannel, replica: str, call: Any) -> None:
        self._owner, self._replica, self._call = owner, replica, call
        self._open = True

    def _release(self) -> None:
        if self._open:
            self._open = False
            self._owner._end(self._replica)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except StopIteration:
            self._release()
            raise
        except grpc.RpcError as error:
            self._owner._failed(self._replica, error)
            self._release()
            raise

    def cancel(self) -> bool:
        self._release()
        return self._call.cancel()

    def __getattr__(self, name: str) -> Any:  # code(), details(), is_active(), ...
        return getattr(self._call, name)

    def __del__(self) -> None:
        self._release()
