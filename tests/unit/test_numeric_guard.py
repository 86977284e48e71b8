"""Inference's numeric guard: adapter values before loading, sampled logprobs while generating."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from services.common.errors import FailedPrecondition, LoraplexError
from services.inference.numeric_guard import (
    check_adapter_values,
    non_finite_error,
    sampled_logprobs_finite,
)

KEY = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e30])
def test_adapter_with_bad_values_is_a_failed_precondition(tmp_path, bad):
    weights = torch.zeros(64, 8)
    weights[3, 5] = bad
    save_file({KEY: weights}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(FailedPrecondition, match=r"^adapter t/a@1 cannot be served: ") as err:
        check_adapter_values("t/a@1", tmp_path, max_abs=1e4)
    assert str(tmp_path) not in err.value.message, "no paths in messages"


def test_ordinary_adapter_passes(tmp_path):
    save_file({KEY: torch.randn(64, 8)}, str(tmp_path / "adapter_model.safetensors"))
    check_adapter_values("t/a@1", tmp_path, max_abs=1e4)


def _positions(*values: float) -> list[dict[int, SimpleNamespace]]:
    return [{i: SimpleNamespace(logprob=v)} for i, v in enumerate(values)]


def test_sampled_logprobs_finite():
    assert sampled_logprobs_finite(_positions(-0.1, -3.0, 0.0))
    assert sampled_logprobs_finite(None) and sampled_logprobs_finite([])
    assert sampled_logprobs_finite([None])
    for bad in (math.nan, math.inf, -math.inf):
        assert not sampled_logprobs_finite(_positions(-0.1, bad))


def test_non_finite_error_names_the_adapter_or_blames_the_model():
    error = non_finite_error("t/a@2")
    assert isinstance(error, FailedPrecondition) and "adapter t/a@2 produced" in error.message
    base = non_finite_error(None)
    assert type(base) is LoraplexError and "model produced non-finite" in base.message


def test_sampled_logprobs_finite_reads_vllm_flat_logprobs():
    from vllm.logprobs import FlatLogprobs

    flat = FlatLogprobs()
    flat.append({5: SimpleNamespace(logprob=-0.5, rank=1, decoded_token="a")})
    assert sampled_logprobs_finite(flat)
    flat.append({6: SimpleNamespace(logprob=math.nan, rank=1, decoded_token="b")})
    assert not sampled_logprobs_finite(flat)
