"""Intervals and tests: bootstrap over questions (fixed seed) and McNemar's exact test.

Every metric is a ratio sum(passed) / sum(counted) over questions; with several training
seeds a question's `passed` and `counted` are summed over seeds, so the figure is the
mean over seeds and the interval resamples questions (the unit the set was drawn in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 20241123


def _ratio(passed: np.ndarray, counted: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return passed / counted


def _indices(n: int, samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def bootstrap_ci(
    passed: Sequence[float],
    counted: Sequence[float],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float | None, float | None, float | None]:
    """(value, low, high) of sum(passed)/sum(counted), 95% percentile interval."""
    p, c = np.asarray(passed, float), np.asarray(counted, float)
    if c.sum() == 0:
        return None, None, None
    value = float(p.sum() / c.sum())
    idx = _indices(len(p), samples, seed)
    draws = _ratio(p[idx].sum(1), c[idx].sum(1))
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return value, float(low), float(high)


def paired_bootstrap_diff(
    a: tuple[Sequence[float], Sequence[float]],
    b: tuple[Sequence[float], Sequence[float]],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float | None, float | None, float | None]:
    """(a - b, low, high): the same resampled questions for both configurations."""
    pa, ca = (np.asarray(x, float) for x in a)
    pb, cb = (np.asarray(x, float) for x in b)
    if ca.sum() == 0 or cb.sum() == 0:
        return None, None, None
    value = float(pa.sum() / ca.sum() - pb.sum() / cb.sum())
    idx = _indices(len(pa), samples, seed)
    draws = _ratio(pa[idx].sum(1), ca[idx].sum(1)) - _ratio(pb[idx].sum(1), cb[idx].sum(1))
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return value, float(low), float(high)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes (binomial on discordant pairs)."""
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def spread(values: Sequence[float]) -> dict[str, float] | None:
    """Mean, sample standard deviation, min and max of per-seed figures."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "sd": sd, "min": min(vals), "max": max(vals)}
