"""The definition every CPU LoRA op must reproduce: row by row, adapter by adapter."""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Slot per row (-1 = no adapter) over 4 slots: the batch shapes every op is checked on.
BATCHES = {
    "all base": [-1] * 10,
    "uniform": [2] * 10,
    "prefill runs": [0, 0, 0, -1, -1, 1, 1, 3, 3, 3],
    "decode mixed": [1, -1, 2, 1, 3, 0, -1, 2, 0, 3],
    "last slot only": [-1, 3, -1, 3, -1, -1, 3, -1, -1, -1],
}


def naive_lora(
    y: torch.Tensor,
    x: torch.Tensor,
    indices: Sequence[int],
    lora_a: Sequence[torch.Tensor],
    lora_b: Sequence[torch.Tensor],
    slices: Sequence[int],
    scale: float = 1.0,
    offset: int = 0,
) -> torch.Tensor:
    """`y[row, slice i] += scale * x[row] @ A_i[slot].T @ B_i[slot][:width].T` for adapter rows
    (slot -1: untouched); shrink in float32, expand in y's dtype, as vLLM's ops."""
    y = y.clone()
    for row, slot in enumerate(indices):
        if slot < 0:
            continue
        column = offset
        for a, b, width in zip(lora_a, lora_b, slices, strict=True):
            shrunk = x[row].float() @ a[slot, 0].float().T * scale
            delta = shrunk.to(y.dtype) @ b[slot, 0, :width].T
            y[row, column : column + width] += delta.to(y.dtype)
            column += width
    return y
