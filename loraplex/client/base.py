"""Channel, credentials, retries and error handling shared by every client.

Configuration comes from arguments, else from `LORAPLEX_API_KEY`,
`LORAPLEX_<SERVICE>_ADDR` and `LORAPLEX_TLS_*` environment variables.

An address may name several replicas: a comma list (`127.0.0.1:50054,127.0.0.1:50064`)
or `dns:///name:port` (a headless Service: every pod). Inference calls then go to the
replica where the named adapter is warm (`loraplex.client.balancing`; tune with
`LORAPLEX_AFFINITY_ADAPTERS_PER_REPLICA`, the replicas' `max_loras`, and
`LORAPLEX_AFFINITY_SPREAD` / `_BALANCE_FACTOR`); other services' calls go round-robin
(gRPC's `round_robin` over the resolved addresses). A call answered UNAVAILABLE (a
replica restarting or gone, a server still loading) is retried with doubling, jittered
backoff, `LORAPLEX_RETRIES` tries in all (default 6: about 3 to 6 s of backoff, longer than a
retrieval replica's tenants take to move to the survivors).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from loraplex.client.balancing import BalancedChannel, adapter_of, is_balanced
from loraplex.routing import ROUND_ROBIN_OPTION, dns_name, grpc_target

DEFAULT_ADDRESSES = {
    "registry": "127.0.0.1:50051",
    "retrieval": "127.0.0.1:50052",
    "training": "127.0.0.1:50053",
    "inference": "127.0.0.1:50054",
}
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_ATTEMPTS = 6
#: Calls routed by adapter affinity over several replicas, per service.
AFFINITY_KEYS: dict[str, Callable[[Any], str | None]] = {"inference": adapter_of}

T = TypeVar("T")
log = logging.getLogger(__name__)


class LoraplexClientError(Exception):
    """A failed call: the gRPC status code and the server's message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> LoraplexClientError:
        return cls(error.code(), error.details() or "")

    @classmethod
    def protocol(cls, message: str) -> LoraplexClientError:
        """The server's answer broke the protocol (or failed a client-side check)."""
        return cls(grpc.StatusCode.DATA_LOSS, message)


@dataclass
class ClientConfig:
    """Where a service is and how to authenticate to it."""

    address: str
    api_key: str = ""
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    extra_metadata: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    #: Tries per call while the service answers UNAVAILABLE (1: no retry).
    attempts: int = DEFAULT_ATTEMPTS
    first_backoff: float = 0.2
    max_backoff: float = 5.0
    #: Replicas an adapter's calls share while none is overloaded (inference).
    affinity_spread: int = 1
    #: A replica over this many times the mean of calls in flight is passed over.
    balance_factor: float = 2.0
    #: Adapters homed on one replica at most, e.g. its `max_loras` (0: hashing alone).
    adapters_per_replica: int = 0

    @classmethod
    def from_env(
        cls, service: str, address: str | None = None, api_key: str | None = None
    ) -> ClientConfig:
        env = os.environ

        def path(name: str) -> Path | None:
            value = env.get(f"LORAPLEX_TLS_{name}")
            return Path(value) if value else None

        return cls(
            address=address
            or env.get(f"LORAPLEX_{service.upper()}_ADDR", DEFAULT_ADDRESSES[service]),
            api_key=api_key if api_key is not None else env.get("LORAPLEX_API_KEY", ""),
            tls_ca_file=path("CA_FILE"),
            tls_cert_file=path("CERT_FILE"),
            tls_key_file=path("KEY_FILE"),
            attempts=max(1, int(env.get("LORAPLEX_RETRIES", DEFAULT_ATTEMPTS))),
            affinity_spread=max(1, int(env.get("LORAPLEX_AFFINITY_SPREAD", 1))),
            balance_factor=max(1.0, float(env.get("LORAPLEX_AFFINITY_BALANCE_FACTOR", 2.0))),
            adapters_per_replica=int(env.get("LORAPLEX_AFFINITY_ADAPTERS_PER_REPLICA", 0)),
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed try `attempt` (1-based): doubling, jittered."""
        ceiling = min(self.max_backoff, self.first_backoff * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def open_channel(self, service: str = "") -> grpc.Channel:
        """One channel to the service: adapter-affine over its replicas for inference when
        the address names several, else gRPC round-robin over what the address resolves to."""
        key = AFFINITY_KEYS.get(service)
        if key is not None and is_balanced(self.address):
            name = dns_name(self.address)
            return BalancedChannel(
                self.address,
                lambda replica: self._channel(replica, name[0] if name else ""),
                key,
                spread=self.affinity_spread,
                balance_factor=self.balance_factor,
                adapters_per_replica=self.adapters_per_replica,
            )
        return self._channel(grpc_target(self.address))

    def _channel(self, target: str, server_name: str = "") -> grpc.Channel:
        """`server_name`: the name a replica dialled by IP presents in its certificate."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ROUND_ROBIN_OPTION,
        ]
        if not (self.tls_ca_file or self.tls_cert_file):
            return grpc.insecure_channel(target, options=options)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
            options.append(("grpc.default_authority", server_name))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.tls_ca_file.read_bytes() if self.tls_ca_file else None,
            private_key=self.tls_key_file.read_bytes() if self.tls_key_file else None,
            certificate_chain=self.tls_cert_file.read_bytes() if self.tls_cert_file else None,
        )
        return grpc.secure_channel(target, credentials, options=options)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        auth = (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()
        return auth + self.extra_metadata


class BaseClient:
    """Owns one channel; every call gets the key, a deadline and typed errors."""

    service = ""

    def __init__(
        self,
        address: str | None = None,
        api_key: str | None = None,
        *,
        config: ClientConfig | None = None,
        timeout: float | None = None,
    ) -> None:
        self.config = config or ClientConfig.from_env(self.service, address, api_key)
        if timeout is not None:
            self.config.timeout = timeout
        self.channel = self.config.open_channel(self.service)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        """One call, retried on UNAVAILABLE when `request` is a message (an iterator of
        them is consumed by the first try and cannot be resent)."""
        attempts = self.config.attempts if isinstance(request, Message) else 1
        for attempt in range(1, attempts + 1):
            try:
                return method(
                    request,
                    timeout=timeout or self.config.timeout,
                    metadata=self.config.metadata(),
                )
            except grpc.RpcError as error:
                self._after_failure(error, attempt, attempts)
        raise AssertionError("unreachable")  # pragma: no cover

    def _after_failure(self, error: grpc.RpcError, attempt: int, attempts: int) -> None:
        """Sleeps before the next try, or raises the typed error when there is none."""
        if error.code() != grpc.StatusCode.UNAVAILABLE or attempt >= attempts:
            raise LoraplexClientError.from_rpc_error(error) from None
        wait = self.config.backoff(attempt)
        log.info("%s unavailable (%s); try %d of %d in %.2fs", self.service,
                 error.details(), attempt + 1, attempts, wait)  # fmt: skip
        time.sleep(wait)

    def _paged(self, method: Callable[..., Any], request: Any, field: str) -> Iterator[Any]:
        """Every item of a paged List RPC: re-sends `request` with each next page token."""
        while True:
            page = self._call(method, request)
            yield from getattr(page, field)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def _stream(
        self, method: Callable[..., Iterator[T]], request: Any, timeout: float | None = None
    ) -> Iterator[T]:
        """Server-streaming call; `timeout=None` uses the client's, 0 means no deadline."""
        deadline = self.config.timeout if timeout is None else (timeout or None)
        attempts = self.config.attempts
        for attempt in range(1, attempts + 1):
            started = False
            try:
                for message in method(request, timeout=deadline, metadata=self.config.metadata()):
                    started = True
                    yield message
                return
            except grpc.RpcError as error:
                if started:  # part of the answer is out: a retry could repeat it
                    raise LoraplexClientError.from_rpc_error(error) from None
                self._after_failure(error, attempt, attempts)
