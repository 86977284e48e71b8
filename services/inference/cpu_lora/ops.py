"""Grouped multi-LoRA kernels for the CPU, in plain torch.

vLLM's torch LoRA ops (`vllm/lora/ops/torch_ops/lora_ops.py`) apply adapters token by token:
`weights[indices]` copies a whole `[out, rank]` matrix for every row of the batch and then runs
a batched einsum over those copies. That is a memory copy of every adapter matrix per token per
layer, paid even when no row has an adapter, and index -1 ("no adapter") silently selects the
last slot. Here the rows of a batch are first grouped by adapter slot, once per forward step
(`group_rows`); each op then runs one small matmul pair per adapter present, on views of the
rows when they are contiguous, and rows without an adapter are never touched.

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


# Slot-block path: for decode batches that mix adapters, a matmul pair per adapter group means a
# dozen tiny matmuls per layer, which cost more in dispatch than in arithmetic on a CPU. There,
# the adapter rows are gathered into one `[slots, width, in]` block (each slot's rows in its own
# block, short blocks padded by repeating a row; only the range of slots in use), each slice
# runs one batched shrink and one batched expand against the stacked weights as they are (views,
# no copies), and the real rows' deltas are added back with one indexed add. The op count is
# fixed whatever the mix; the arithmetic is the exact one plus the padding rows.
# Padding rows are computed and dropped; rows without an adapter are never read or written.


@dataclass(frozen=True, slots=True)
class SlotBlocks:
    """Adapter rows of one batch laid out as `[count, width]` blocks, one per slot from `first`
    to the last slot in use (slots in between without rows get a padding block).

    Position `(slot - first) * width + j` of the layout holds batch row `gather[...]`; `keep`
    lists the positions that hold a real adapter row and `rows` the batch row of each.
    """

    gather: torch.Tensor
    keep: torch.Tensor
    rows: torch.Tensor
    first: int
    count: int
    width: int


def slot_blocks(groups: RowGroups) -> SlotBlocks:
    """The block layout of `groups` (width: the largest group)."""
    if groups.empty:
        empty = torch.zeros(0, dtype=torch.long)
        return SlotBlocks(empty, empty, empty, 0, 0, 0)
    width = max(end - start for _, start, end in groups.spans)
    first = min(slot for slot, _, _ in groups.spans)
    count = max(slot for slot, _, _ in groups.spans) - first + 1
    gather = [0] * (count * width)
    keep: list[int] = []
    rows: list[int] = []
    order = None if groups.order is None else groups.order.tolist()
    for slot, start, end in groups.spans:
        batch_rows = range(start, end) if order is None else order[start:end]
        for j, row in enumerate(batch_rows):
            position = (slot - first) * width + j
            gather[position] = row
            keep.append(position)
            rows.append(row)
    as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    return SlotBlocks(as_long(gather), as_long(keep), as_long(rows), first, count, width)


def _blocks_of(stacked: torch.Tensor, slots: int) -> torch.Tensor:
    """vLLM's `[slots, 1, out, in]` (or `[slots, out, in]`) weights as `[slots, out, in]`."""
    return stacked.reshape(slots, stacked.shape[-2], stacked.shape[-1])


def blocked_weights(
    lora_a: Sequence[torch.Tensor],
    lora_b: Sequence[torch.Tensor],
    output_slices: Sequence[int],
    slots: int,
    dtype: torch.dtype,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The batched-matmul operands of `blocked_lora_linear`: `[slots, in, rank]` A and
    `[slots, rank, size]` B per slice. Views of the stacked weights when no dtype conversion
    is needed, so they stay valid when vLLM loads another adapter into a slot."""
    weights_a = [_blocks_of(a, slots).to(torch.float32).transpose(1, 2) for a in lora_a]
    weights_b = [
        _blocks_of(b, slots)[:, :size].to(dtype).transpose(1, 2)
        for b, size in zip(lora_b, output_slices, strict=True)
    ]
    return weights_a, weights_b


def blocked_lora_linear(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_a: Sequence[torch.Tensor],
    lora_b: Sequence[torch.Tensor],
    output_slices: Sequence[int],
    blocks: SlotBlocks,
    scale: float = 1.0,
    offset: int = 0,
    weights: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
) -> None:
    """`grouped_lora_linear` as batched matmuls over slot blocks: `2 * slices + 3` ops.

    `weights` is `blocked_weights(lora_a, lora_b, output_slices, blocks.slots, out.dtype)`,
    computed here when not given.
    """
    if not blocks.rows.numel():
        return
    first, count, width = blocks.first, blocks.count, blocks.width
    if weights is None:
        weights = blocked_weights(lora_a, lora_b, output_slices, lora_a[0].shape[0], out.dtype)
    gathered = x.to(torch.float32).index_select(0, blocks.gather).view(count, width, -1)
    whole = first == 0 and count == weights[0][0].shape[0]
    deltas = []
    for weight_a, weight_b in zip(*weights, strict=True):
        if not whole:
            weight_a, weight_b = weight_a[first : first + count], weight_b[first : first + count]
        shrunk = torch.bmm(gathered, weight_a)
        if scale != 1.0:
            shrunk.mul_(scale)
        deltas.append(torch.bmm(shrunk.to(out.dtype), weight_b))
    delta = deltas[0] if len(deltas) == 1 else torch.cat(deltas, dim=2)
    total = delta.shape[2]
    delta = delta.view(count * width, total).index_select(0, blocks.keep)
    _add_rows(out[:, offset : offset + total], blocks.rows, delta)
