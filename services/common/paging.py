"""Opaque page tokens over an ordered key, with validated page sizes.

A token is client input like any other: decoding never raises anything but
INVALID_ARGUMENT, and a caller names the shape it issued so a well-formed token of
the wrong shape (`5` where a name was issued) is refused the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from typing import Any

from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: Tokens this suite issues hold one key (a name, a number, a timestamp and an id):
#: far below this. Longer input is refused before it is decoded at all.
MAX_TOKEN_CHARS = 4096
_NOT_OURS = "page_token is not one this server issued; start again without a page_token"

#: What a decoded token must look like: a type, a list of types (a JSON array with
#: exactly those elements), or a predicate.
Shape = type | list[type] | Callable[[Any], bool]


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def _is(value: Any, kind: type) -> bool:
    """JSON-aware isinstance: booleans are not numbers, floats are finite, ints are floats."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, kind)


def matches(value: Any, shape: Shape) -> bool:
    if isinstance(shape, list):
        return (
            isinstance(value, list)
            and len(value) == len(shape)
            and all(_is(v, k) for v, k in zip(value, shape, strict=True))
        )
    if isinstance(shape, type):
        return _is(value, shape)
    return bool(shape(value))


def decode_token(token: str, shape: Shape | None = None) -> Any:
    """The position a token encodes, or None for the first page.

    With `shape`, a position that does not match it is refused as INVALID_ARGUMENT;
    without, any JSON value comes back (callers then check it themselves).
    """
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(_NOT_OURS)
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, RecursionError, UnicodeError) as exc:
        raise InvalidArgument(_NOT_OURS) from exc
    if shape is not None and not matches(position, shape):
        raise InvalidArgument(_NOT_OURS)
    return position
