"""Paging for every List RPC: validated sizes and opaque tokens over an ordered key.

Cores page, not servicers or stores: the servicer passes the request's raw
`page_size` and `page_token`, the core parses them into a `Page`, asks its store
for `page.fetch` rows after `page.after` (one more than the page, to know whether
another follows), and returns `page.cut(rows, key)`: the rows of this page and the
token of the next ("" on the last page).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_FOREIGN_TOKEN = "page_token is not one this server issued; start again without a page_token"
#: Tokens this suite issues hold one small key; longer input is refused undecoded.
MAX_TOKEN_CHARS = 4096
T = TypeVar("T")
P = TypeVar("P")


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(position: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def decode_token(token: str) -> Any:
    """The position a token encodes, or None for the first page."""
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument(_FOREIGN_TOKEN)
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeError, RecursionError) as exc:
        raise InvalidArgument(_FOREIGN_TOKEN) from exc


def _same_shape(position: Any, first: Any) -> bool:
    """A decoded token matches the position type this list pages on (JSON lists → tuples)."""
    if isinstance(first, tuple):
        return (
            isinstance(position, list)
            and len(position) == len(first)
            and all(_same_shape(p, f) for p, f in zip(position, first, strict=True))
        )
    if isinstance(first, float):
        return (
            isinstance(position, int | float)
            and not isinstance(position, bool)
            and math.isfinite(position)
        )
    return type(position) is type(first)


@dataclass(frozen=True)
class Page(Generic[P]):
    """One requested page: its size and the position it starts after (`first` at the start)."""

    size: int
    after: P

    @classmethod
    def parse(
        cls, size: int, token: str, first: P, valid: Callable[[P], bool] | None = None
    ) -> Page[P]:
        """`first` is the position before the first row; a token must decode to its type
        (and pass `valid`, the bounds a real position has), else INVALID_ARGUMENT."""
        size = page_size(size)
        if not token:
            return cls(size, first)
        position = decode_token(token)
        if not _same_shape(position, first):
            raise InvalidArgument(_FOREIGN_TOKEN)
        position = tuple(position) if isinstance(first, tuple) else position
        if valid is not None and not valid(position):
            raise InvalidArgument(_FOREIGN_TOKEN)
        return cls(size, position)

    @property
    def fetch(self) -> int:
        """Rows to ask the store for: one more than the page, to see whether more follow."""
        return self.size + 1

    def cut(self, rows: Sequence[T], key: Callable[[T], Any]) -> tuple[list[T], str]:
        """This page's rows and the next page's token ("" when this page is the last)."""
        items = list(rows[: self.size])
        if len(rows) <= self.size:
            return items, ""
        position = key(items[-1])
        return items, encode_token(list(position) if isinstance(position, tuple) else position)
