"""Bootstrap intervals (fixed seed) and McNemar's exact test."""

from __future__ import annotations

import math

import pytest

from loraplex.eval.stats import bootstrap_ci, mcnemar_exact, paired_bootstrap_diff, spread


def test_bootstrap_ci_contains_the_value_and_is_reproducible():
    passed, counted = [1] * 30 + [0] * 70, [1] * 100
    value, low, high = bootstrap_ci(passed, counted)
    assert value == pytest.approx(0.3)
    assert low < 0.3 < high
    assert 0.19 < low < 0.23 and 0.37 < high < 0.41  # ~ ±1.96·sqrt(.3·.7/100)
    assert bootstrap_ci(passed, counted) == (value, low, high)


def test_bootstrap_ci_of_a_ratio_and_of_nothing():
    value, low, high = bootstrap_ci([2, 0, 1], [3, 0, 3])  # 3 of 6 over two questions
    assert value == pytest.approx(0.5) and 0 <= low <= 0.5 <= high <= 1
    assert bootstrap_ci([0, 0], [0, 0]) == (None, None, None)


def test_all_or_nothing_gives_a_degenerate_interval():
    assert bootstrap_ci([1] * 20, [1] * 20) == (1.0, 1.0, 1.0)


def test_paired_difference():
    a = ([1] * 60 + [0] * 40, [1] * 100)
    b = ([1] * 40 + [0] * 60, [1] * 100)
    diff, low, high = paired_bootstrap_diff(a, b)
    assert diff == pytest.approx(0.2)
    assert 0.1 < low < 0.2 < high < 0.3  # 20 discordant pairs, all one way: tight
    same = paired_bootstrap_diff(a, a)
    assert same == (0.0, 0.0, 0.0)


def test_mcnemar_exact_matches_the_binomial():
    # 10 discordant pairs split 8/2: p = 2 * P(X <= 2), X ~ Bin(10, 0.5)
    a = [True] * 8 + [False] * 2 + [True] * 5
    b = [False] * 8 + [True] * 2 + [True] * 5
    expected = 2 * sum(math.comb(10, k) for k in range(3)) / 2**10
    assert mcnemar_exact(a, b) == pytest.approx(expected)  # 0.109
    assert mcnemar_exact(a, a) == 1.0
    assert mcnemar_exact([True] * 12, [False] * 12) == pytest.approx(2 / 2**12)


def test_spread_over_seeds():
    s = spread([0.2, 0.3, 0.4])
    assert s["mean"] == pytest.approx(0.3) and s["sd"] == pytest.approx(0.1)
    assert (s["min"], s["max"]) == (0.2, 0.4)
    assert spread([0.5])["sd"] == 0.0
    assert spread([None]) is None
