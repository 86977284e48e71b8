"""Grouped multi-LoRA ops for the CPU in plain torch: the reference and fallback of the C++ ops.

vLLM's torch LoRA ops (`vllm/lora/ops/torch_ops/lora_ops.py`) apply adapters token by token:
`weights[indices]` copies a whole `[out, rank]` matrix for every row of the batch and then runs
a batched einsum over those copies. That is a memory copy of every adapter matrix per token per
layer, paid even when no row has an adapter, and index -1 ("no adapter") silently selects the
last slot. Here the rows of a batch are first grouped by adapter slot, once per forward step
(`group_rows`); each op then runs one small matmul pair per adapter present, on views of the
rows when they are contiguous, and rows without an adapter are never touched.

The wrapper runs the C++ ops of `csrc/lora_kernels.cpp` (same grouping, no Python per call)
when they could be built, and these otherwise; vLLM's sharded layers (`add_shrink` /
`add_expand`) always use these.

Weights are laid out as vLLM stacks them: `[max_loras, 1, out, in]` (or `[max_loras, out, in]`).
Numerics follow vLLM's ops: the shrink runs in the dtype of its output buffer (float32), the
expand in the dtype of the layer output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

NO_ADAPTER = -1


@dataclass(frozen=True, slots=True)
class RowGroups:
    """Rows of one batch grouped by adapter slot: the plan every LoRA op of a step shares.

    `spans` holds `(slot, start, end)`. When `order` is None each adapter's rows already form one
    contiguous run of the batch (prefill, uniform batches) and `start:end` index the batch itself,
    so every op works on views. Otherwise `order` lists the adapter rows sorted by slot and
    `start:end` index that gathered order. Rows without an adapter appear in neither.
    """

    spans: tuple[tuple[int, int, int], ...]
    order: torch.Tensor | None
    num_rows: int

    @property
    def empty(self) -> bool:
        """True when no row of the batch has an adapter: every LoRA op is then a no-op."""
        return not self.spans


def group_rows(indices: torch.Tensor | Sequence[int]) -> RowGroups:
    """Groups batch rows by their adapter slot (-1 = no adapter)."""
    index_tensor = torch.as_tensor(indices, dtype=torch.long).reshape(-1).cpu()
    num_rows = int(index_tensor.numel())
    if num_rows == 0:
        return RowGroups((), None, 0)
    values, counts = torch.unique_consecutive(index_tensor, return_counts=True)
    runs: list[tuple[int, int, int]] = []
    start = 0
    for slot, count in zip(values.tolist(), counts.tolist(), strict=True):
        if slot != NO_ADAPTER:
            runs.append((slot, start, start + count))
        start += count
    slots = [slot for slot, _, _ in runs]
    if len(set(slots)) == len(slots):
        return RowGroups(tuple(runs), None, num_rows)
    rows_by_slot: dict[int, list[int]] = {}
    for slot, run_start, run_end in runs:
        rows_by_slot.setdefault(slot, []).extend(range(run_start, run_end))
    order: list[int] = []
    spans: list[tuple[int, int, int]] = []
    for slot in sorted(rows_by_slot):
        rows = rows_by_slot[slot]
        spans.append((slot, len(order), len(order) + len(rows)))
        order.extend(rows)
    return RowGroups(tuple(spans), torch.tensor(order, dtype=torch.long), num_rows)


def _matrix(stacked: torch.Tensor, slot: int, dtype: torch.dtype) -> torch.Tensor:
    """One slot's `[out, in]` matrix from vLLM's stacked `[slots, 1, out, in]` weights."""
    weight = stacked[slot]
    if weight.dim() == 3:
        weight = weight[0]
    return weight.to(dtype)


def _mm_into(target: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> None:
    """`target[:] = left @ right`, straight into `target`'s memory when its layout allows."""
    if target.is_contiguous():
        torch.mm(left, right, out=target)
    else:
        target.copy_(left @ right)


def _add_rows(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """`target[rows] += values` for distinct `rows`.

    `index_put_(accumulate=True)` rather than `index_add_`: same arithmetic (one `+` per
    element, rows are distinct), but it runs serially below ATen's grain size where
    `index_add_` always opens an OpenMP region, which costs ~60 us per call under vLLM's
    thread binding (the pool sleeps between the small LoRA ops).
    """
    target.index_put_((rows,), values, accumulate=True)


def _set_rows(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """`target[rows] = values` (`index_put_`, serial for small batches, see `_add_rows`)."""
    target.index_put_((rows,), values)


def _rows(groups: RowGroups, tensor: torch.Tensor) -> torch.Tensor:
    """The adapter rows of `tensor`, in the order the spans index."""
    return tensor if groups.order is None else tensor.index_select(0, groups.order)


def grouped_shrink(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_a: torch.Tensor,
    groups: RowGroups,
    scale: float = 1.0,
) -> None:
    """`out[row, :rank] = scale * x[row] @ lora_a[slot(row)].T` for every adapter row.

    Rows without an adapter keep whatever `out` holds (vLLM's callers pass zeros).
    """
    if groups.empty:
        return
    x = _rows(groups, x.to(out.dtype))
    shrunk = out if groups.order is None else out.new_empty(x.shape[0], out.shape[1])
    for slot, start, end in groups.spans:
        weight = _matrix(lora_a, slot, out.dtype)
        target = shrunk[start:end, : weight.shape[0]]
        _mm_into(target, x[start:end], weight.t())
        if scale != 1.0:
            target.mul_(scale)
    if groups.order is not None:
        _set_rows(out, groups.order, shrunk)


def grouped_expand(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_b: torch.Tensor,
    groups: RowGroups,
    offset: int = 0,
    size: int | None = None,
    add_inputs: bool = True,
) -> None:
    """`out[row, offset:offset+size] (+)= x[row] @ lora_b[slot(row)][:size].T` for adapter rows.

    `size` defaults to the columns both the adapter and `out` have (vLLM pads either side).
    """
    if groups.empty:
        return
    x = _rows(groups, x.to(out.dtype))
    width = lora_b.shape[-2] if size is None else size
    width = min(width, out.shape[1] - offset)
    columns = out[:, offset : offset + width]
    if groups.order is None:
        for slot, start, end in groups.spans:
            weight = _matrix(lora_b, slot, out.dtype)[:width]
            if add_inputs:
                columns[start:end].addmm_(x[start:end], weight.t())
            else:
                columns[start:end].copy_(x[start:end] @ weight.t())
        return
    delta = out.new_empty(x.shape[0], width)
    for slot, start, end in groups.spans:
        weight = _matrix(lora_b, slot, out.dtype)[:width]
        _mm_into(delta[start:end], x[start:end], weight.t())
    if add_inputs:
        _add_rows(columns, groups.order, delta)
    else:
        _set_rows(columns, groups.order, delta)


def grouped_lora_linear(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_a: Sequence[torch.Tensor],
    lora_b: Sequence[torch.Tensor],
    output_slices: Sequence[int],
    groups: RowGroups,
    scale: float = 1.0,
    offset: int = 0,
) -> None:
    """`out[row, slice_i] += scale * x[row] @ A_i[slot].T @ B_i[slot].T` for every slice `i`.

    Shrink and expand fused per adapter group: the `[rows, rank]` intermediate never leaves the
    group, and rows without an adapter are not read or written.
    """
    if groups.empty:
        return
    total = sum(output_slices)
    x = _rows(groups, x.to(torch.float32))
    permuted = groups.order is not None
    target = out.new_empty(x.shape[0], total) if permuted else out[:, offset : offset + total]
    for slot, start, end in groups.spans:
        rows = x[start:end]
        column = 0
        for a_stacked, b_stacked, width in zip(lora_a, lora_b, output_slices, strict=True):
            shrunk = rows @ _matrix(a_stacked, slot, torch.float32).t()
            if scale != 1.0:
                shrunk.mul_(scale)
            weight = _matrix(b_stacked, slot, out.dtype)[:width]
            block = target[start:end, column : column + width]
            if permuted:
                _mm_into(block, shrunk.to(out.dtype), weight.t())
            else:
                block.addmm_(shrunk.to(out.dtype), weight.t())
            column += width
    if permuted:
        _add_rows(out[:, offset : offset + total], groups.order, target)
