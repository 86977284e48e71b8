"""The wrapper's per-step state: path choice and the transposed-B cache invalidation."""

from __future__ import annotations

import torch

from services.inference.cpu_lora.ops import group_rows
from services.inference.cpu_lora.wrapper import GroupedPunicaWrapperCPU


def _wrapper(indices: list[int], slot_ids: tuple[int | None, ...]) -> GroupedPunicaWrapperCPU:
    wrapper = GroupedPunicaWrapperCPU(64, 8, "cpu")
    wrapper.token_groups = group_rows(indices)
    wrapper._slot_ids = slot_ids
    return wrapper


def test_transposed_b_is_rebuilt_when_a_slot_changes_adapter() -> None:
    lora_b = torch.randn(2, 1, 16, 4)
    wrapper = _wrapper([0, 1], (7, 9))
    first = wrapper._transposed_b(lora_b, torch.float32)
    assert wrapper._transposed_b(lora_b, torch.float32) is first
    lora_b[1].zero_()
    wrapper._slot_ids = (7, 11)
    rebuilt = wrapper._transposed_b(lora_b, torch.float32)
    assert rebuilt is not first and torch.count_nonzero(rebuilt[4:]) == 0


def test_path_choice() -> None:
    weights = torch.zeros(8, 1, 8, 512)
    slots = tuple(range(1, 9))
    decode_mix = [slot if row % 3 != 2 else -1 for row, slot in enumerate(list(range(8)) * 2)]
    assert _wrapper(decode_mix, slots)._stacked(weights, 8, 3 * 512 + 1536, 3)
    assert not _wrapper([0] * 18, slots)._stacked(weights, 8, 3 * 512 + 1536, 3)
    long_prefill = [0] * 500 + [1] * 500
    assert not _wrapper(long_prefill, slots)._stacked(weights, 8, 3 * 512 + 1536, 3)
