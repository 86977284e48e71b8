"""The one paging helper: sizes, tokens that round-trip, and tokens this server never issued."""

from __future__ import annotations

import base64
import json
import math

import pytest

from services.common.errors import InvalidArgument
from services.common.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_TOKEN_CHARS,
    Page,
    decode_token,
    encode_token,
)


def test_sizes_default_cap_and_refuse_negative():
    assert Page.parse(0, "", first="").size == DEFAULT_PAGE_SIZE
    assert Page.parse(10_000, "", first="").size == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument, match="negative"):
        Page.parse(-1, "", first="")


def test_pages_walk_every_row_once_and_end_with_an_empty_token():
    rows = [f"name-{i:02d}" for i in range(7)]
    seen, token = [], ""
    for _ in range(10):
        page = Page.parse(3, token, first="")
        fetched = [r for r in rows if r > page.after][: page.fetch]
        items, token = page.cut(fetched, key=lambda r: r)
        seen += items
        if not token:
            break
    assert seen == rows


def test_an_exact_last_page_has_no_next_token():
    page = Page.parse(2, "", first=0)
    assert page.cut([5, 4], key=lambda v: v) == ([5, 4], "")
    items, token = page.cut([5, 4, 3], key=lambda v: v)
    assert items == [5, 4] and Page.parse(2, token, first=0).after == 4


def test_tuple_positions_round_trip_as_tuples():
    first = (math.inf, "")
    page = Page.parse(1, "", first=first)
    assert page.after == first
    _, token = page.cut([(2.5, "b"), (1.5, "a")], key=lambda r: r)
    assert Page.parse(1, token, first=first).after == (2.5, "b")


@pytest.mark.parametrize(
    ("token", "first"),
    [
        ("not base64!", ""),
        (encode_token(3), ""),  # an int where a name is expected
        (encode_token("x"), 0),
        (encode_token(True), 0),
        (encode_token(["a", "b"]), (math.inf, "")),  # wrong element types
        (encode_token([1.0]), (math.inf, "")),  # wrong length
        (encode_token({"a": 1}), (math.inf, "")),
        (encode_token(None), ""),  # "null" is not the first page
    ],
)
def test_foreign_tokens_are_invalid_argument(token, first):
    with pytest.raises(InvalidArgument, match="page_token"):
        Page.parse(10, token, first=first)


def test_deeply_nested_tokens_and_bounds_are_invalid_argument():
    deep = base64.urlsafe_b64encode(b"[" * 100_000).decode()
    with pytest.raises(InvalidArgument):
        Page.parse(10, deep, first=0)
    with pytest.raises(InvalidArgument):
        Page.parse(10, encode_token(0), first=0, valid=lambda v: v >= 1)
    assert Page.parse(10, encode_token(3), first=0, valid=lambda v: v >= 1).after == 3


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000, b"\xff\xfe", json.dumps([float("nan"), "x"]).encode()],
    ids=["nested 100k deep", "not utf-8", "nan position"],
)
def test_hostile_tokens_are_invalid_argument(raw):
    token = base64.urlsafe_b64encode(raw).decode()
    with pytest.raises(InvalidArgument):
        Page.parse(10, token, first=(0.0, ""))


def test_overlong_tokens_are_refused_undecoded():
    with pytest.raises(InvalidArgument):
        decode_token("A" * (MAX_TOKEN_CHARS + 1))
