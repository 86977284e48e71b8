"""The one way a service calls another: async, on a common channel, with a deadline,
retries on UNAVAILABLE and the remote status mapped back to a domain error.

Usage, from a core's gateway (the caller acts for the tenant of the request it serves)::

    registry = kit.remote("registry", settings.registry_addr, settings.service_key)
    stub = registry.stub(RegistryServiceStub)
    reply = await registry.call(stub.GetAdapter, GetAdapterRequest(ref=ref), tenant)
    async for message in registry.stream(stub.DownloadAdapter, request, tenant):
        ...

- `call` (unary request) retries while the remote answers UNAVAILABLE, with
  exponential backoff and jitter, up to `CallPolicy.attempts` tries; every try has
  the policy's deadline (or the `deadline` given). For a streamed request pass a
  zero-argument factory that builds a fresh request iterator, so a retry can resend.
  `deadline=` overrides the policy's seconds for one call.
- `stream` (server streaming) is not retried once it has started; a stream that
  fails before its first message is retried like a call.
- Any `grpc.aio.AioRpcError` becomes a `LoraplexError` through `translate`: the
  remote's domain answers (NOT_FOUND, INVALID_ARGUMENT, ...) keep their code and
  message, so a tenant asking for another tenant's thing still sees NOT_FOUND;
  transport failures and the remote's internal errors become UNAVAILABLE naming
  the remote service; a refused service key is our misconfiguration, so it is
  UNAVAILABLE too, never UNAUTHENTICATED to our caller.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from loraplex.routing import grpc_target
from services.common import errors
from services.common.channels import acting_for, open_channel
from services.common.settings import ClientTlsSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Remote answers that are about the request, not the remote's health: passed through.
PASSED_THROUGH: dict[grpc.StatusCode, type[errors.LoraplexError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidArgument,
        errors.NotFound,
        errors.AlreadyExists,
        errors.FailedPrecondition,
        errors.PermissionDenied,
        errors.ResourceExhausted,
        errors.Aborted,
        errors.DeadlineExceeded,
        errors.DataLoss,
    )
}


def translate(error: grpc.aio.AioRpcError, service: str) -> errors.LoraplexError:
    """The domain error our own caller should see for `service`'s failed answer."""
    code = error.code()
    cls = PASSED_THROUGH.get(code)
    if cls is not None:
        return cls(error.details() or f"{service} said {code.name}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return errors.Unavailable(f"{service} does not accept this service's key")
    return errors.Unavailable(f"{service} is unavailable ({code.name}); retry shortly")


@dataclass(frozen=True)
class CallPolicy:
    """Deadline per try and the retry schedule on UNAVAILABLE."""

    timeout: float = 30.0
    attempts: int = 4
    first_backoff: float = 0.2
    max_backoff: float = 5.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed try `attempt` (1-based): doubling, full jitter."""
        ceiling = min(self.max_backoff, self.first_backoff * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


class Remote:
    """Another service as this one sees it: one lazily opened channel, a key, a policy."""

    def __init__(
        self,
        name: str,
        target: str,
        service_key: str,
        tls: ClientTlsSettings | None = None,
        policy: CallPolicy | None = None,
    ) -> None:
        try:
            grpc_target(target)  # a bad replica list stops the start-up, not the first call
        except ValueError as exc:
            raise errors.FailedPrecondition(f"the {name} address is invalid: {exc}") from None
        self.name = name
        self.target = target
        self.service_key = service_key
        self.tls = tls or ClientTlsSettings()
        self.policy = policy or CallPolicy()
        self._channel: grpc.aio.Channel | None = None

    @property
    def channel(self) -> grpc.aio.Channel:
        """Opened on first use, inside the running event loop."""
        if self._channel is None:
            self._channel = open_channel(self.target, self.tls)
        return self._channel

    def stub(self, stub_class: Callable[[grpc.aio.Channel], T]) -> T:
        return stub_class(self.channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def call(
        self,
        method: Callable[..., Any],
        request: Any,
        tenant: str,
        *,
        deadline: float | None = None,
        retry: bool = True,
    ) -> Any:
        """One unary-response call for `tenant`; `request` may be a factory of an iterator."""
        attempts = self.policy.attempts if retry else 1
        for attempt in range(1, attempts + 1):
            body = request() if callable(request) else request
            try:
                return await method(
                    body,
                    metadata=acting_for(self.service_key, tenant),
                    timeout=deadline or self.policy.timeout,
                )
            except grpc.aio.AioRpcError as error:
                await self._after_failure(error, attempt, attempts)
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream(
        self,
        method: Callable[..., Any],
        request: Any,
        tenant: str,
        *,
        deadline: float | None = None,
    ) -> AsyncIterator[Any]:
        """Server-streamed answers for `tenant`; `deadline=0` means none (a watch)."""
        seconds = self.policy.timeout if deadline is None else (deadline or None)
        attempts = self.policy.attempts
        for attempt in range(1, attempts + 1):
            call = method(request, metadata=acting_for(self.service_key, tenant), timeout=seconds)
            started = False
            try:
                async for message in call:
                    started = True
                    yield message
                return
            except grpc.aio.AioRpcError as error:
                if started:
                    raise translate(error, self.name) from None
                await self._after_failure(error, attempt, attempts)
            finally:
                call.cancel()

    async def _after_failure(
        self, error: grpc.aio.AioRpcError, attempt: int, attempts: int
    ) -> None:
        """Waits before the next try, or raises the translated error when there is none."""
        if error.code() != grpc.StatusCode.UNAVAILABLE or attempt >= attempts:
            raise translate(error, self.name) from None
        wait = self.policy.backoff(attempt)
        log.info(
            "%s unavailable (%s); try %d of %d in %.2fs",
            self.name,
            error.details(),
            attempt + 1,
            attempts,
            wait,
        )
        await asyncio.sleep(wait)
