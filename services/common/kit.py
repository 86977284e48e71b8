"""The service kit: what every service stands on besides its own settings, core and servicer.

A service is a `Service` subclass that names its gRPC services, registers its
servicer and builds its core in `start()` from the kit's parts:

- `kit.blocking(fn, *args)`: run blocking work (SQL, file I/O, hashing, CPU-heavy
  calls) on the bounded executor, never on the event loop;
- `kit.database(url)`: the SQLAlchemy engine, disposed at close;
- `kit.remote(name, target, service_key)`: another service, called the one way
  (`services.common.calls`), over the client TLS settings built in `__main__`;
- `kit.keys`: the API key ring, loaded once per process and shared by every front
  end (and by an app's own routes, should they need it).

A service lists its front ends in `front_ends`: the gRPC server always, plus any
HTTP front end it adds (`services.common.http.HttpFrontEnd`). The bootstrap
(`services.common.server`) owns the rest of the lifecycle: it admits every call the
same way on every front end (`services.common.admission`), refuses business calls
until `start()` returns (the readiness gate), reports health, and on SIGTERM turns
not ready, drains every front end together, then calls `close()`, which closes the
service's own parts and then the kit's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import grpc
from sqlalchemy import Engine

from services.common.auth import KeyRing
from services.common.calls import CallPolicy, Remote
from services.common.db import make_engine
from services.common.readiness import Readiness
from services.common.server import FrontEnd, GrpcFrontEnd
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
CoreT = TypeVar("CoreT")
#: What cores take to run blocking work: `Kit.blocking`, or any awaitable equivalent.
Blocking = Callable[..., Awaitable[Any]]


class Kit:
    """One process's shared parts: executor, key ring, database engines, remote services."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(
            max_workers=settings.executor_threads, thread_name_prefix=settings.service_name
        )
        self._keys: KeyRing | None = None
        self._engines: list[Engine] = []
        self._remotes: list[Remote] = []

    @property
    def keys(self) -> KeyRing:
        """The API keys (keys file + `LORAPLEX_API_KEYS`/`_SERVICE_KEYS`), loaded on first use."""
        if self._keys is None:
            settings = self.settings
            self._keys = KeyRing.load(
                settings.resolved_keys_file(), settings.tenant_keys, settings.service_keys
            )
        return self._keys

    @keys.setter
    def keys(self, keys: KeyRing) -> None:
        self._keys = keys

    async def blocking(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` on the bounded executor; the loop stays free meanwhile."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def database(self, url: str) -> Engine:
        engine = make_engine(url)
        self._engines.append(engine)
        return engine

    def remote(
        self, name: str, target: str, service_key: str, policy: CallPolicy | None = None
    ) -> Remote:
        """`name` is how errors and logs call it ("registry"); TLS comes from settings."""
        remote = Remote(name, target, service_key, self.settings.client_tls, policy)
        self._remotes.append(remote)
        return remote

    async def close(self) -> None:
        """After the service's own close: channels, then executor (waits), then engines."""
        for remote in self._remotes:
            await remote.close()
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self.executor.shutdown, wait=True)
        )
        for engine in self._engines:
            engine.dispose()


class Service:
    """Base of every service app: subclasses set `service_names` (and `starting_message`)
    and implement `register`, `start` and, when the core holds resources, `stop`."""

    #: Full gRPC service names, e.g. "loraplex.registry.v1.RegistryService".
    service_names: tuple[str, ...] = ()
    #: What a call that arrives before `start()` finished is told (UNAVAILABLE).
    starting_message: str = ""

    def __init__(self, settings: ServiceSettings, kit: Kit | None = None) -> None:
        self.settings = settings
        self.kit = kit or Kit(settings)
        message = self.starting_message or (
            f"the {settings.service_name} service is starting; retry shortly"
        )
        #: Opened by the server once `start()` returned; every front end checks it.
        self.readiness = Readiness(message)
        #: What serves this app, started and drained together: gRPC, plus any HTTP
        #: front end the app appends (`HttpFrontEnd(fastapi_app, "openai_port")`).
        self.front_ends: list[FrontEnd] = [GrpcFrontEnd()]

    def register(self, server: grpc.aio.Server) -> None:
        """Adds the servicer(s); called before the server starts."""
        raise NotImplementedError

    async def start(self) -> None:
        """Builds and loads the core (database, index, model); ready once it returns."""

    async def stop(self) -> None:
        """Closes the core's own resources, after the server has drained."""

    async def close(self) -> None:
        try:
            await self.stop()
        finally:
            await self.kit.close()


class Servicer(Generic[CoreT]):
    """Base of business servicers: the core is attached when the service starts.

    The readiness gate keeps every call away until then, so a servicer needs no
    "is it loaded yet?" check of its own.
    """

    core: CoreT

    def attach(self, core: CoreT) -> None:
        self.core = core
