"""HNSW efSearch: the size-based default, an explicit setting, and filtered widening."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from services.retrieval.index import (
    AUTO_EF_FLOOR,
    IndexParams,
    VectorIndex,
    auto_ef_search,
    search_beam,
)
from services.retrieval.records import IndexKind
from services.retrieval.settings import RetrievalSettings


def test_default_beam_is_todays_96_up_to_100k_and_grows_monotonically_beyond():
    assert [auto_ef_search(n) for n in (0, 1, 5_000, 100_000)] == [AUTO_EF_FLOOR] * 4
    sizes = [100_000, 100_001, 200_000, 300_000, 500_000, 1_000_000, 3_000_000, 10_000_000]
    beams = [auto_ef_search(n) for n in sizes]
    assert beams == sorted(beams)
    assert beams[1] - beams[0] <= 1  # continuous at the knee: no jump in cost
    assert beams[-1] > beams[-2] > beams[-3]


def test_default_beam_covers_what_the_sweep_needed_at_each_measured_size():
    # bench/retrieval_scale_bench.py --sweep-sizes: the smallest measured efSearch with
    # recall@10 >= 0.95 (synthetic vectors, M=32, efConstruction=64) at each size.
    # 2026-12-07: 100k: 64 -> 0.949, 96 -> 0.966; 300k: 128 -> 0.936, 192 -> 0.965;
    # 1M: 192 -> 0.927, 256 -> 0.953, 384 -> 0.981.
    assert auto_ef_search(100_000) >= 96
    assert auto_ef_search(300_000) >= 192
    assert auto_ef_search(1_000_000) >= 256
    # ...while keeping 100k at today's cost and 1M well under efSearch 384's.
    assert auto_ef_search(100_000) == 96
    assert auto_ef_search(1_000_000) < 384


def test_an_explicit_ef_search_is_used_at_every_size():
    for ntotal in (10, 100_000, 1_000_000, 10_000_000):
        assert search_beam(64, ntotal, 10, None) == 64
    assert search_beam(None, 1_000_000, 10, None) == auto_ef_search(1_000_000)


def test_beam_is_never_below_k_and_widens_up_to_4x_for_selective_filters():
    assert search_beam(None, 1_000, 200, None) == 200
    assert search_beam(50, 1_000, 200, None) == 200
    # 10% of the collection allowed: k * 10 = 100 < 96 * 4.
    assert search_beam(None, 50_000, 10, 5_000) == 100
    # 0.1% allowed: k * 1000 capped at 4x the beam, explicit or by size.
    assert search_beam(50, 10_000_000, 10, 10_000) == 200
    assert search_beam(None, 10_000_000, 10, 10_000) == 4 * auto_ef_search(10_000_000)
    # An unselective filter keeps the plain beam.
    assert search_beam(None, 1_000_000, 10, 1_000_000) == auto_ef_search(1_000_000)


def test_setting_is_unset_by_default_and_an_explicit_value_reaches_the_index(monkeypatch):
    assert IndexParams.from_settings(RetrievalSettings()).ef_search is None
    monkeypatch.setenv("LORAPLEX_RETRIEVAL_HNSW_EF_SEARCH", "40")
    settings = RetrievalSettings()
    assert settings.hnsw_ef_search == 40
    # Searches through the index still work at a fixed beam below the default.
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    params = IndexParams.from_settings(settings.model_copy(update={"hnsw_m": 8}))
    assert params.ef_search == 40
    index = VectorIndex.build(IndexKind.HNSW, 8, params, np.arange(300), vectors, 1)
    assert index.search(vectors[5], 1)[1].tolist() == [5]
    monkeypatch.setenv("LORAPLEX_RETRIEVAL_HNSW_EF_SEARCH", "0")
    with pytest.raises(ValidationError, match="hnsw_ef_search"):
        RetrievalSettings()
