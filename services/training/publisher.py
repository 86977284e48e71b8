"""Pushing a finished adapter to the registry, and the metric gate that moves an alias.

The gate is parsed, never evaluated: `metric OP number` clauses joined by `and`
(or commas), with OP among >=, <=, >, <, ==. A missing metric fails the gate.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.common.errors import InvalidArgument

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
    """Where finished adapters go; the registry in production, a fake in unit tests."""

    def push(
        self,
        tenant: str,
        name: str,
        folder: Path,
        lineage: dict[str, str],
        metrics: dict[str, float],
        description: str,
    ) -> PublishedVersion: ...

    def set_alias(self, tenant: str, name: str, alias: str, version: int) -> None: ...


class RegistryPublisher:
    """Pushes with the training service's key, acting for the job's tenant."""

    def __init__(self, address: str, service_key: str, timeout: float = 600.0) -> None:
        self.address = address
        self.service_key = service_key
        self.timeout = timeout

    def _client(self, tenant: str):  # type: ignore[no-untyped-def]
        from loraplex.client.base import ClientConfig
        from loraplex.client.registry import RegistryClient

        config = ClientConfig(
            address=self.address,
            api_key=self.service_key,
            timeout=self.timeout,
            extra_metadata=(("x-loraplex-tenant", tenant),),
        )
        return RegistryClient(config=config)

    def push(
        self,
        tenant: str,
        name: str,
        folder: Path,
        lineage: dict[str, str],
        metrics: dict[str, float],
        description: str,
    ) -> PublishedVersion:
        clean = {k: v for k, v in metrics.items() if math.isfinite(v)}
        with self._client(tenant) as client:
            version = client.push(
                name, folder, lineage=lineage, metrics=clean, description=description
            )
        return PublishedVersion(name, int(version.version))

    def set_alias(self, tenant: str, name: str, alias: str, version: int) -> None:
        with self._client(tenant) as client:
            client.set_alias(name, alias, version)
