"""The value check behind the registry's push and inference's load: finite, sane weights."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from services.common.adapter_weights import check_folder_weights, check_weight_values
from services.common.errors import InvalidArgument

KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


def _write(path, tensor: torch.Tensor, extra: dict | None = None):
    save_file({KEY: tensor, **(extra or {})}, str(path))
    return path


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_ordinary_weights_pass(tmp_path, dtype):
    check_weight_values(_write(tmp_path / "a.safetensors", torch.randn(8, 576).to(dtype)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused(tmp_path, dtype, bad):
    weights = torch.randn(8, 576)
    weights[7, 575] = bad  # the very last element: the whole tensor is read
    path = _write(tmp_path / "a.safetensors", weights.to(dtype))
    with pytest.raises(InvalidArgument, match="NaN or infinite"):
        check_weight_values(path)


def test_absurd_magnitude_is_refused(tmp_path):
    weights = torch.randn(8, 576)
    weights[0, 0] = 1e30
    with pytest.raises(InvalidArgument, match="1e\\+30 in magnitude"):
        check_weight_values(_write(tmp_path / "a.safetensors", weights))
    check_weight_values(tmp_path / "a.safetensors", max_abs=1e31)


def test_float8_nan_is_refused(tmp_path):
    weights = torch.zeros(4, 4, dtype=torch.float8_e4m3fn)
    check_weight_values(_write(tmp_path / "ok.safetensors", weights))
    weights = torch.full((4, 4), float("nan")).to(torch.float8_e4m3fn)
    with pytest.raises(InvalidArgument, match="NaN"):
        check_weight_values(_write(tmp_path / "nan.safetensors", weights))
    weights = torch.full((4, 4), float("inf")).to(torch.float8_e5m2)
    with pytest.raises(InvalidArgument, match="NaN or infinite"):
        check_weight_values(_write(tmp_path / "inf.safetensors", weights))


def test_integer_tensors_and_chunking(tmp_path, monkeypatch):
    monkeypatch.setattr("services.common.adapter_weights._CHUNK_ELEMENTS", 7)
    weights = torch.randn(8, 576)
    path = _write(tmp_path / "a.safetensors", weights, {"steps": torch.arange(5)})
    check_weight_values(path)
    weights[3, 100] = math.nan
    with pytest.raises(InvalidArgument):
        check_weight_values(_write(tmp_path / "a.safetensors", weights, {"n": torch.arange(3)}))


def test_folder_names_the_file(tmp_path):
    _write(tmp_path / "adapter_model.safetensors", torch.full((2, 2), math.nan))
    with pytest.raises(InvalidArgument, match=r"adapter_model\.safetensors"):
        check_folder_weights(tmp_path)
