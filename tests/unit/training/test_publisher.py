"""The promotion gate is parsed, never evaluated."""

from __future__ import annotations

import math

import pytest

from services.common.errors import InvalidArgument
from services.training.publisher import check_gate, parse_gate


def test_gate_clauses_and_outcomes():
    assert [str(c) for c in parse_gate("test_exact_match>=0.8 and test_loss<1.5")] == [
        "test_exact_match>=0.8",
        "test_loss<1.5",
    ]
    metrics = {"test_exact_match": 0.9, "test_loss": 1.2}
    assert check_gate("test_exact_match>=0.8, test_loss<1.5", metrics) == ""
    assert "does not satisfy" in check_gate("test_exact_match>=0.95", metrics)
    assert "not measured" in check_gate("bleu>1", metrics)
    assert "not measured" in check_gate("test_loss<2", {"test_loss": math.nan})
    assert check_gate("", metrics) == ""


@pytest.mark.parametrize(
    "gate",
    ["__import__('os').system('x')", "test_loss", "a >= b", "x>=1 or y<2", "x=>1", " and "],
)
def test_anything_but_metric_op_number_is_refused(gate):
    with pytest.raises(InvalidArgument):
        parse_gate(gate)
