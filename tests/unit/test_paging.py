"""Page tokens are client input: any garbage is INVALID_ARGUMENT, never INTERNAL."""

from __future__ import annotations

import base64
import json

import pytest

from services.common.errors import InvalidArgument
from services.common.paging import decode_token, encode_token


def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


@pytest.mark.parametrize(
    ("raw", "shape"),
    [
        ("[" * 100_000, None),  # RecursionError inside json
        ("[" * 100_000, str),
        ("5", str),
        ("5", [float, str]),
        ("[1,2,3]", [float, str]),
        ('[{"a":1},"x"]', [float, str]),
        ('[true,"x"]', [float, str]),  # a bool is not a timestamp
        ('[NaN,"x"]', [float, str]),
        ('["x", 1]', [float, str]),
        ("null", int),
        ('"name"', int),
        ("\xff\xfe", None),
    ],
)
def test_hostile_tokens_are_invalid_argument(raw, shape):
    with pytest.raises(InvalidArgument, match="page_token"):
        decode_token(_token(raw), shape)


def test_garbage_and_oversized_tokens_are_invalid_argument():
    for token in ("!!notatoken", "A" * 5000, _token('"' + "x" * 4000 + '"')):
        with pytest.raises(InvalidArgument):
            decode_token(token, str)


def test_issued_tokens_round_trip_and_old_callers_still_work():
    assert decode_token("") is None and decode_token("", str) is None
    assert decode_token(encode_token("b-docs"), str) == "b-docs"
    assert decode_token(encode_token([1700000000.5, "job-1"]), [float, str]) == [
        1700000000.5,
        "job-1",
    ]
    assert decode_token(encode_token([1700000000, "job-1"]), [float, str])  # whole seconds
    assert decode_token(encode_token(7), int) == 7
    assert decode_token(encode_token({"any": "json"})) == {"any": "json"}  # no shape given
    assert decode_token(encode_token(3), lambda v: v > 2) == 3
    with pytest.raises(InvalidArgument):
        decode_token(encode_token(1), lambda v: v > 2)
    assert json.loads(base64.urlsafe_b64decode(encode_token("x"))) == "x"
