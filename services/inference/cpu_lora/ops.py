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
        out.index_copy_(0, groups.order, shrunk)


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
        columns.index_add_(0, groups.order, delta)
    else:
        columns.index_copy_(0, groups.order, delta)


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
        out[:, offset : offset + total].index_add_(0, groups.order, target)


# Stacked path: for decode batches that mix many adapters, a dozen tiny matmuls per layer cost
# more in dispatch than in arithmetic on a CPU. There, one matmul over all stacked slots,
# followed by a per-row one-hot slot mask, does the same work in a fixed number of ops; the
# mask zeroes every slot but the row's own (rows without an adapter: all of them) before the
# expand, so a row only ever receives its own adapter's delta, exactly as in the grouped path.


def slot_mask(indices: torch.Tensor | Sequence[int], slots: int) -> torch.Tensor:
    """`[rows, slots]` float32 one-hot of each row's slot; all-zero rows for index -1."""
    index_tensor = torch.as_tensor(indices, dtype=torch.long).reshape(-1).cpu()
    mask = torch.zeros(index_tensor.numel(), slots + 1, dtype=torch.float32)
    mask.scatter_(1, torch.where(index_tensor < 0, slots, index_tensor).unsqueeze(1), 1.0)
    return mask[:, :slots].contiguous()


def transpose_stacked_b(lora_b: torch.Tensor) -> torch.Tensor:
    """vLLM's `[slots, 1, out, rank]` B weights as one `[slots * rank, out]` matrix."""
    slots, out_size, rank = lora_b.shape[0], lora_b.shape[-2], lora_b.shape[-1]
    return lora_b.reshape(slots, out_size, rank).transpose(1, 2).reshape(slots * rank, out_size)


def _all_slots(lora_a: torch.Tensor) -> torch.Tensor:
    """vLLM's `[slots, 1, rank, in]` A weights as one `[slots * rank, in]` matrix (a view)."""
    return lora_a.reshape(-1, lora_a.shape[-1])


def stacked_shrink(
    out: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, mask: torch.Tensor, scale: float
) -> None:
    """`grouped_shrink` computed over all slots at once, keeping each row's own slot."""
    slots, rank = lora_a.shape[0], lora_a.shape[-2]
    shrunk = x.to(out.dtype) @ _all_slots(lora_a).to(out.dtype).t()
    own = (shrunk.view(-1, slots, rank) * mask.unsqueeze(-1)).sum(dim=1)
    if scale != 1.0:
        own.mul_(scale)
    out[:, :rank] = own


def stacked_expand(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_b_t: torch.Tensor,
    mask: torch.Tensor,
    offset: int,
    size: int,
    add_inputs: bool = True,
) -> None:
    """`grouped_expand` with `lora_b_t = transpose_stacked_b(lora_b)`; base rows get + 0."""
    slots = mask.shape[1]
    rank = lora_b_t.shape[0] // slots
    width = min(size, out.shape[1] - offset)
    spread = x[:, :rank].to(out.dtype).unsqueeze(1) * mask.to(out.dtype).unsqueeze(-1)
    columns = out[:, offset : offset + width]
    if add_inputs:
        columns.addmm_(spread.view(-1, slots * rank), lora_b_t[:, :width])
    else:
        base_rows = mask.sum(dim=1, keepdim=True) == 0
        delta = spread.view(-1, slots * rank) @ lora_b_t[:, :width]
        columns.copy_(torch.where(base_rows, columns, delta))


def stacked_lora_linear(
    out: torch.Tensor,
    x: torch.Tensor,
    lora_a: Sequence[torch.Tensor],
    lora_b_t: Sequence[torch.Tensor],
    output_slices: Sequence[int],
    mask: torch.Tensor,
    scale: float = 1.0,
    offset: int = 0,
) -> None:
    """`grouped_lora_linear` over all slots at once: three ops per slice, any adapter mix."""
    x = x.to(torch.float32)
    slots = mask.shape[1]
    weights = mask.unsqueeze(-1) if scale == 1.0 else mask.unsqueeze(-1) * scale
    column = offset
    for a_stacked, b_t, width in zip(lora_a, lora_b_t, output_slices, strict=True):
        rank = a_stacked.shape[-2]
        shrunk = x @ _all_slots(a_stacked).to(torch.float32).t()
        own = (shrunk.view(-1, slots, rank) * weights).view(-1, slots * rank)
        out[:, column : column + width].addmm_(own.to(out.dtype), b_t[:, :width])
        column += width
