"""Grouped LoRA ops against a naive per-row reference, and against vLLM's own torch ops."""

from __future__ import annotations

import pytest
import torch

from services.inference.cpu_lora.ops import (
    group_rows,
    grouped_expand,
    grouped_lora_linear,
    grouped_shrink,
)
from tests.unit.cpu_lora.reference import BATCHES, naive_lora

SLOTS, RANK, DIM = 4, 8, 32
SLICES = (16, 8, 8)


@pytest.fixture
def weights() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    lora_a = [torch.randn(SLOTS, 1, RANK, DIM, generator=generator) for _ in SLICES]
    lora_b = [torch.randn(SLOTS, 1, width, RANK, generator=generator) for width in SLICES]
    return lora_a, lora_b


def naive(y, x, indices, lora_a, lora_b, scale, offset):
    return naive_lora(y, x, indices, lora_a, lora_b, SLICES, scale, offset)


@pytest.mark.parametrize("indices", BATCHES.values(), ids=BATCHES.keys())
def test_fused_linear_matches_naive(weights, indices) -> None:
    lora_a, lora_b = weights
    x, y = torch.randn(len(indices), DIM), torch.randn(len(indices), 2 + sum(SLICES))
    got = y.clone()
    grouped_lora_linear(got, x, lora_a, lora_b, SLICES, group_rows(indices), 0.5, offset=2)
    torch.testing.assert_close(got, naive(y, x, indices, lora_a, lora_b, 0.5, 2))
    base_rows = [row for row, slot in enumerate(indices) if slot < 0]
    assert torch.equal(got[base_rows], y[base_rows]), "rows without adapter must stay untouched"


@pytest.mark.parametrize("indices", BATCHES.values(), ids=BATCHES.keys())
def test_shrink_then_expand_matches_naive(weights, indices) -> None:
    lora_a, lora_b = weights
    groups = group_rows(torch.tensor(indices))
    x, y = torch.randn(len(indices), DIM), torch.randn(len(indices), sum(SLICES))
    got = y.clone()
    column = 0
    for a, b, width in zip(lora_a, lora_b, SLICES, strict=True):
        buffer = torch.zeros(len(indices), RANK)
        grouped_shrink(buffer, x, a, groups, 0.5)
        grouped_expand(got, buffer, b, groups, column, width)
        column += width
    torch.testing.assert_close(got, naive(y, x, indices, lora_a, lora_b, 0.5, 0))


def test_expand_without_add_inputs_overwrites_adapter_rows_only(weights) -> None:
    _, lora_b = weights
    indices = BATCHES["decode mixed"]
    x, y = torch.randn(len(indices), RANK), torch.randn(len(indices), SLICES[0])
    got = y.clone()
    grouped_expand(got, x, lora_b[0], group_rows(indices), add_inputs=False)
    for row, slot in enumerate(indices):
        expected = y[row] if slot < 0 else x[row] @ lora_b[0][slot, 0].T
        torch.testing.assert_close(got[row], expected)


def test_group_rows_plans() -> None:
    assert group_rows([-1, -1]).empty
    contiguous = group_rows([0, 0, -1, 1])
    assert contiguous.order is None and contiguous.spans == ((0, 0, 2), (1, 3, 4))
    mixed = group_rows([1, 0, -1, 1])
    assert mixed.order.tolist() == [1, 0, 3] and mixed.spans == ((0, 0, 1), (1, 1, 3))


def test_vllm_torch_ops_apply_last_slot_to_rows_without_adapter(weights) -> None:
    """The upstream bug at op level: vLLM's bgmv gives index -1 the last slot's delta."""
    from vllm.lora.ops.torch_ops import bgmv_expand, bgmv_shrink

    lora_a, lora_b = weights
    indices = BATCHES["decode mixed"]
    x, y = torch.randn(len(indices), DIM), torch.zeros(len(indices), SLICES[0])
    buffer = torch.zeros(len(indices), RANK)
    bgmv_shrink(x, lora_a[0], buffer, torch.tensor(indices), 1.0)
    bgmv_expand(buffer, lora_b[0], y, torch.tensor(indices), add_inputs=True)
    last_slot = (x[1] @ lora_a[0][SLOTS - 1, 0].T) @ lora_b[0][SLOTS - 1, 0].T
    torch.testing.assert_close(y[1], last_slot)

    fixed = torch.zeros_like(y)
    grouped_lora_linear(fixed, x, lora_a[:1], lora_b[:1], SLICES[:1], group_rows(indices))
    assert torch.count_nonzero(fixed[1]) == 0
    adapter_rows = [row for row, slot in enumerate(indices) if slot >= 0]
    torch.testing.assert_close(fixed[adapter_rows], y[adapter_rows])
