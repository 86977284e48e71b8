"""Publishing a finished adapter to the registry, and the metric gate that moves an alias.

The gate is parsed, never evaluated: `metric OP number` clauses joined by `and`
(or commas), with OP among >=, <=, >, <, ==. A missing metric fails the gate.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from loraplex.adapter_transfer import adapter_files, push_chunks, push_header
from loraplex.registry.v1 import registry_service_pb2 as pb
from loraplex.registry.v1 import registry_service_pb2_grpc as pb_grpc
from services.common.calls import Remote
from services.common.errors import InvalidArgument, NotFound
from services.common.kit import Blocking

log = logging.getLogger(__name__)

_CLAUSE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|>|<)\s*([-+]?[0-9]*\.?[0-9]+)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Clause:
    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse_gate(text: str) -> list[Clause]:
    """`test_exact_match>=0.8 and test_loss<1.5` -> clauses; INVALID_ARGUMENT otherwise."""
    parts = [p for p in re.split(r",|\band\b", text) if p.strip()]
    if not parts or len(text) > 500:
        raise InvalidArgument("promote_if is empty; use e.g. 'test_exact_match>=0.8'")
    clauses = []
    for part in parts:
        match = _CLAUSE.match(part)
        if not match:
            raise InvalidArgument(
                f"promote_if clause {part.strip()!r} is not 'metric OP number'"
                " (OP: >=, <=, >, <, ==), e.g. 'test_exact_match>=0.8'"
            )
        clauses.append(Clause(match[1], match[2], float(match[3])))
    return clauses


def check_gate(text: str, metrics: dict[str, float]) -> str:
    """Empty string when every clause holds, else why the gate did not pass."""
    if not text:
        return ""
    for clause in parse_gate(text):
        value = metrics.get(clause.metric)
        if value is None or math.isnan(value):
            return f"metric {clause.metric!r} was not measured"
        if not _OPS[clause.op](value, clause.threshold):
            return f"{clause.metric}={value:.4g} does not satisfy {clause}"
    return ""


@dataclass(frozen=True)
class PublishedVersion:
    name: str
    version: int

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class Publisher(Protocol):
    """Where finished adapters go; the registry in production, a dict in tests."""

    async def push(
        self,
        tenant: str,
        name: str,
        folder: Path,
        lineage: dict[str, str],
        metrics: dict[str, float],
        description: str,
    ) -> PublishedVersion: ...

    async def set_alias(self, tenant: str, name: str, alias: str, version: int) -> None: ...

    async def find(self, tenant: str, name: str, training_job: str) -> PublishedVersion | None:
        """The version `training_job` pushed already (its lineage names the job), if any."""
        ...


#: Newest versions searched for a job's earlier push (it is among the newest).
FIND_PAGES, FIND_PAGE_SIZE = 5, 100


class RegistryPublisher:
    """Pushes over the kit's call layer (TLS, deadline, retry), acting for the job's tenant."""

    def __init__(self, registry: Remote, blocking: Blocking) -> None:
        self.registry = registry
        self.stub = registry.stub(pb_grpc.RegistryServiceStub)
        self._blocking = blocking

    async def push(
        self,
        tenant: str,
        name: str,
        folder: Path,
        lineage: dict[str, str],
        metrics: dict[str, float],
        description: str,
    ) -> PublishedVersion:
        clean = {k: v for k, v in metrics.items() if math.isfinite(v)}
        files = await self._blocking(adapter_files, folder)
        header = await self._blocking(
            push_header,
            name,
            folder,
            files,
            lineage=lineage,
            metrics=clean,
            description=description,
        )

        async def requests() -> AsyncIterator[pb.PushAdapterRequest]:
            yield pb.PushAdapterRequest(header=header)
            chunks = push_chunks(files)
            while (request := await self._blocking(next, chunks, None)) is not None:
                yield request

        reply = await self.registry.call(self.stub.PushAdapter, requests, tenant)
        return PublishedVersion(name, int(reply.version.version))

    async def set_alias(self, tenant: str, name: str, alias: str, version: int) -> None:
        request = pb.SetAliasRequest(name=name, alias=alias, version=version)
        await self.registry.call(self.stub.SetAlias, request, tenant)

    async def find(self, tenant: str, name: str, training_job: str) -> PublishedVersion | None:
        token = ""
        for _ in range(FIND_PAGES):
            request = pb.ListAdapterVersionsRequest(
                name=name, page_size=FIND_PAGE_SIZE, page_token=token
            )
            try:
                reply = await self.registry.call(self.stub.ListAdapterVersions, request, tenant)
            except NotFound:
                return None  # no version of the adapter at all
            for version in reply.versions:
                if version.lineage.get("training_job") == training_job:
                    return PublishedVersion(name, int(version.version))
            token = reply.next_page_token
            if not token:
                return None
        return None
