"""The shared input rules: printable names, one top_k rule, finite thresholds."""

from __future__ import annotations

import math
import re

import pytest

from services.common import inputs
from services.common.errors import InvalidArgument


@pytest.mark.parametrize(
    ("name", "codepoint"),
    [
        ("x\0y", "U+0000"),
        ("tab\there", "U+0009"),
        ("bell\x07", "U+0007"),
        ("del\x7f", "U+007F"),
        ("c1\x85", "U+0085"),
        ("report\u202etxt.exe", "U+202E"),  # right-to-left override
        ("iso\u2066late", "U+2066"),  # left-to-right isolate
        ("zero\u200bwidth", "U+200B"),
        ("\ufeffbom", "U+FEFF"),
        ("line\u2028break", "U+2028"),
    ],
)
def test_names_with_control_or_bidi_characters_are_refused_naming_the_character(name, codepoint):
    with pytest.raises(InvalidArgument, match=re.escape(codepoint)) as err:
        inputs.check_name(name, "dataset name")
    assert err.value.message.startswith("dataset name ")
    assert name not in err.value.message  # shown escaped, never raw into a terminal


@pytest.mark.parametrize("name", ["handbook", "Q3 report (final).jsonl", "données-été", "日本語"])
def test_printable_names_of_any_script_pass(name):
    assert inputs.check_name(name, "dataset name") == name


def test_name_length_is_bounded():
    with pytest.raises(InvalidArgument, match="1-10 characters"):
        inputs.check_name("", "job name", 10)
    with pytest.raises(InvalidArgument, match="1-10 characters"):
        inputs.check_name("x" * 11, "job name", 10)


def test_one_top_k_rule():
    assert inputs.top_k(0) == inputs.DEFAULT_TOP_K
    assert inputs.top_k(inputs.MAX_TOP_K) == inputs.MAX_TOP_K
    for bad in (-1, inputs.MAX_TOP_K + 1):
        with pytest.raises(InvalidArgument, match=f"between 1 and {inputs.MAX_TOP_K}"):
            inputs.top_k(bad, "rag.top_k")


def test_min_score_is_finite_or_unset():
    assert inputs.min_score(None) is None
    assert inputs.min_score(-0.5) == -0.5
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(InvalidArgument, match="finite number"):
            inputs.min_score(bad)
