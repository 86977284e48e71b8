"""Adapter names, references and aliases: the one grammar every service parses.

The registry validates with it; inference parses a request's reference once at
the edge and passes the value down, so no service re-parses a string it rebuilt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.common.errors import InvalidArgument

# Matched with fullmatch: `$` would also accept a trailing newline.
_SEGMENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_ADAPTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,62}")
_VERSION = re.compile(r"[0-9]{1,18}")
LATEST = "latest"


@dataclass(frozen=True)
class AdapterName:
    tenant: str
    name: str

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name}"


@dataclass(frozen=True)
class AdapterRef:
    """`tenant/name`, `tenant/name@3` or `tenant/name@prod`; no suffix means `@latest`."""

    adapter: AdapterName
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        suffix = f"@{self.version}" if self.version else f"@{self.alias}" if self.alias else ""
        return f"{self.adapter}{suffix}"

    @property
    def tenant(self) -> str:
        return self.adapter.tenant

    @property
    def selector(self) -> str:
        """The alias this reference follows (`latest` when none is named); empty for a version."""
        return "" if self.version else self.alias or LATEST

    @classmethod
    def exact(cls, adapter: AdapterName, version: int) -> AdapterRef:
        return cls(adapter, version=version)


def parse_name(text: str) -> AdapterName:
    tenant, sep, name = text.partition("/")
    if not sep or not _SEGMENT.fullmatch(tenant) or not _ADAPTER.fullmatch(name) or ".." in name:
        raise InvalidArgument(
            f"adapter name {text[:80]!r} is invalid: use 'tenant/name' where name has letters,"
            " digits, '.', '_' or '-' (at most 128)"
        )
    return AdapterName(tenant, name)


def parse_ref(text: str) -> AdapterRef:
    base, sep, selector = text.partition("@")
    name = parse_name(base)
    if not sep or selector == LATEST:
        return AdapterRef(name)
    if _VERSION.fullmatch(selector):  # ASCII digits only: str.isdigit() accepts '²'
        version = int(selector)
        if version < 1:
            raise InvalidArgument("versions start at 1")
        return AdapterRef(name, version=version)
    return AdapterRef(name, alias=validate_alias(selector))


def validate_alias(alias: str) -> str:
    if alias == LATEST:
        raise InvalidArgument("'latest' is reserved: it always means the newest version")
    if not _ALIAS.fullmatch(alias):
        raise InvalidArgument(
            f"alias {alias[:64]!r} is invalid: start with a letter, then letters, digits,"
            " '.', '_' or '-' (at most 63)"
        )
    return alias
