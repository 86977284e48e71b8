"""Channel, credentials and error handling shared by every client.

Configuration comes from arguments, else from `LORAPLEX_API_KEY`,
`LORAPLEX_<SERVICE>_ADDR` and `LORAPLEX_TLS_*` environment variables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

DEFAULT_ADDRESSES = {
    "registry": "127.0.0.1:50051",
    "retrieval": "127.0.0.1:50052",
    "training": "127.0.0.1:50053",
    "inference": "127.0.0.1:50054",
}
DEFAULT_TIMEOUT_SECONDS = 30.0
#: gRPC's own retries (within each call's deadline): a server that is starting, or a
#: replica whose tenants are moving to the survivors, answers UNAVAILABLE for a moment.
RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.25s",
                    "maxBackoff": "4s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

T = TypeVar("T")


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
        )

    def open_channel(self) -> grpc.Channel:
        options = [
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", RETRY_SERVICE_CONFIG),
        ]
        if not (self.tls_ca_file or self.tls_cert_file):
            return grpc.insecure_channel(self.address, options=options)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.tls_ca_file.read_bytes() if self.tls_ca_file else None,
            private_key=self.tls_key_file.read_bytes() if self.tls_key_file else None,
            certificate_chain=self.tls_cert_file.read_bytes() if self.tls_cert_file else None,
        )
        return grpc.secure_channel(self.address, credentials, options=options)

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
        self.channel = self.config.open_channel()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        try:
            return method(
                request, timeout=timeout or self.config.timeout, metadata=self.config.metadata()
            )
        except grpc.RpcError as error:
            raise LoraplexClientError.from_rpc_error(error) from None

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
        try:
            yield from method(request, timeout=deadline, metadata=self.config.metadata())
        except grpc.RpcError as error:
            raise LoraplexClientError.from_rpc_error(error) from None
