"""Adapter names, references, aliases and file paths: parsed and validated in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.common.errors import InvalidArgument

# Matched with fullmatch: `$` would also accept a trailing newline.
_SEGMENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_ADAPTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,62}")
_FILE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
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


def validate_file_path(path: str) -> str:
    """Relative paths inside an adapter folder; nothing that could escape it."""
    parts = path.split("/")
    if (
        not path
        or len(path) > 255
        or "\\" in path
        or len(parts) > 3
        or not all(_FILE_PART.fullmatch(part) for part in parts)
    ):
        raise InvalidArgument(
            f"file path {path[:80]!r} is invalid: use a relative path of letters, digits,"
            " '.', '_' or '-' (no '..', no absolute paths)"
        )
    return path
