"""`GroupedPunicaWrapperCPU`: vLLM's CPU punica wrapper with grouped LoRA ops.

vLLM asks its platform which punica wrapper to build (`Platform.get_punica_wrapper`); the plugin
points the CPU platform at this subclass. It keeps all of vLLM's metadata handling and adds one
thing per forward step: the batch's rows grouped by adapter slot (`ops.group_rows`), computed
once in `update_metadata` and shared by every LoRA layer of the step. The token-level ops then
run per adapter group instead of per token (see `ops`). Imported only inside vLLM processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

from services.inference.cpu_lora.ops import (
    RowGroups,
    group_rows,
    grouped_expand,
    grouped_lora_linear,
    grouped_shrink,
    slot_mask,
    stacked_expand,
    stacked_lora_linear,
    stacked_shrink,
    transpose_stacked_b,
)

if TYPE_CHECKING:
    from vllm.lora.layers import LoRAMapping

_NO_ROWS = RowGroups((), None, 0)
# Cost model of the path choice, calibrated on a 2-core AVX-512 box (see docs/cpu-lora-plugin.md):
# a small torch op costs ~9 us of dispatch, a skinny fp32 matmul runs at ~200 MFLOP per ms.
OP_COST_US = 9.0
FLOP_PER_US = 200_000.0


class GroupedPunicaWrapperCPU(PunicaWrapperCPU):
    """Punica wrapper whose shrink/expand ops run one matmul pair per adapter in the batch."""

    def __init__(
        self,
        max_num_batched_tokens: int,
        max_batches: int,
        device: torch.device | str,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_num_batched_tokens, max_batches, device, **kwargs)
        self.token_groups: RowGroups = _NO_ROWS
        self.sampler_groups: RowGroups = _NO_ROWS
        self._slot_ids: tuple[int | None, ...] = ()
        self._token_mask: torch.Tensor | None = None
        self._b_t_cache: dict[int, tuple[tuple[int | None, ...], torch.Tensor, torch.Tensor]] = {}

    def update_metadata(
        self,
        mapping: LoRAMapping,
        lora_index_to_id: list[int | None],
        max_loras: int,
        vocab_size: int,
        **kwargs: Any,
    ) -> None:
        super().update_metadata(mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        self.token_groups = group_rows(self.token_lora_indices)
        self.sampler_groups = group_rows(self.sampler_indices)
        self._slot_ids = tuple(lora_index_to_id)
        self._token_mask = None

    def _stacked(self, lora_a_or_b: torch.Tensor, rank: int, widths: int, slices: int) -> bool:
        """Whether one matmul over all slots beats a matmul pair per adapter group.

        `widths` is the sum of the inner and outer sizes the op multiplies by `rank`. Grouped:
        ~2 ops per slice per group plus a gather and a scatter when groups are interleaved,
        exact FLOPs. Stacked: ~3 ops per slice, FLOPs for every slot on every row.
        """
        groups = self.token_groups
        slots = lora_a_or_b.shape[0]
        if slots != len(self._slot_ids) or len(groups.spans) < 2:
            return False
        adapter_rows = sum(end - start for _, start, end in groups.spans)
        grouped_ops = len(groups.spans) * (2 * slices + 1) + (2 if groups.order is not None else 0)
        grouped = grouped_ops * OP_COST_US + 2 * adapter_rows * rank * widths / FLOP_PER_US
        stacked_flops = 2 * groups.num_rows * slots * rank * widths
        stacked = (3 * slices + 1) * OP_COST_US + stacked_flops / FLOP_PER_US
        return stacked < grouped

    def _mask(self) -> torch.Tensor:
        """The step's `[rows, slots]` one-hot slot mask, built on first use."""
        if self._token_mask is None:
            self._token_mask = slot_mask(self.token_lora_indices, len(self._slot_ids))
        return self._token_mask

    def _transposed_b(self, lora_b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`transpose_stacked_b(lora_b)`, rebuilt only when the slots hold other adapters."""
        entry = self._b_t_cache.get(id(lora_b))
        if entry is None or entry[0] != self._slot_ids or entry[2].dtype != dtype:
            entry = (self._slot_ids, lora_b, transpose_stacked_b(lora_b).to(dtype))
            self._b_t_cache[id(lora_b)] = entry
        return entry[2]

    def _groups_for(self, groups: RowGroups, rows: int) -> RowGroups | None:
        """The step's groups, or None when `rows` does not match the mapping (let vLLM decide)."""
        return groups if groups.num_rows == rows else None

    def add_shrink(
        self,
        y: tuple[torch.Tensor, ...] | torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: tuple[torch.Tensor, ...],
        scale: float,
        **kwargs: Any,
    ) -> None:
        x = x.view(-1, x.shape[-1])
        groups = self._groups_for(self.token_groups, x.shape[0])
        if groups is None:
            return super().add_shrink(y, x, lora_a_stacked, scale, **kwargs)
        for slice_idx, lora_a in enumerate(lora_a_stacked):
            out = y[slice_idx]
            out = out.view(-1, out.shape[-1])
            if self._stacked(lora_a, lora_a.shape[-2], x.shape[1], 1):
                stacked_shrink(out, x, lora_a, self._mask(), scale)
            else:
                grouped_shrink(out, x, lora_a, groups, scale)
        return None

    def add_expand(
        self,
        y: torch.Tensor,
        x: tuple[torch.Tensor, ...] | torch.Tensor,
        lora_b_stacked: tuple[torch.Tensor, ...],
        output_slices: tuple[int, ...],
        offset_start: int = 0,
        add_inputs: bool = True,
        **kwargs: Any,
    ) -> None:
        flat = y.view(-1, y.shape[-1])
        groups = self._groups_for(self.token_groups, flat.shape[0])
        if groups is None:
            return super().add_expand(
                y, x, lora_b_stacked, output_slices, offset_start, add_inputs, **kwargs
            )
        offset = offset_start
        for slice_idx, lora_b in enumerate(lora_b_stacked):
            width = output_slices[slice_idx]
            if self._stacked(lora_b, lora_b.shape[-1], width, 1):
                lora_b_t = self._transposed_b(lora_b, flat.dtype)
                stacked_expand(
                    flat, x[slice_idx], lora_b_t, self._mask(), offset, width, add_inputs
                )
            else:
                grouped_expand(flat, x[slice_idx], lora_b, groups, offset, width, add_inputs)
            offset += width
        return None

    def add_lora_embedding(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_b_stacked: torch.Tensor,
        add_inputs: bool = True,
        **kwargs: Any,
    ) -> None:
        groups = self._groups_for(self.token_groups, y.shape[0])
        if groups is None:
            return super().add_lora_embedding(y, x, lora_b_stacked, add_inputs, **kwargs)
        grouped_expand(y, x, lora_b_stacked, groups, add_inputs=add_inputs)
        return None

    def add_lora_linear(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: tuple[torch.Tensor, ...],
        lora_b_stacked: tuple[torch.Tensor, ...],
        scale: float,
        output_slices: tuple[int, ...],
        *,
        buffer: tuple[torch.Tensor, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        groups = self._groups_for(self.token_groups, x.view(-1, x.shape[-1]).shape[0])
        if groups is None:
            return super().add_lora_linear(
                y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer, **kwargs
            )
        flat_y = y.view(-1, y.shape[-1])
        flat_x = x.view(-1, x.shape[-1])
        rank = lora_a_stacked[0].shape[-2]
        widths = len(output_slices) * flat_x.shape[1] + sum(output_slices)
        if self._stacked(lora_a_stacked[0], rank, widths, len(output_slices)):
            lora_b_t = [self._transposed_b(b, flat_y.dtype) for b in lora_b_stacked]
            stacked_lora_linear(
                flat_y, flat_x, lora_a_stacked, lora_b_t, output_slices, self._mask(), scale
            )
            return None
        grouped_lora_linear(
            flat_y, flat_x, lora_a_stacked, lora_b_stacked, output_slices, groups, scale
        )
        return None

    def add_lora_logits(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: torch.Tensor,
        lora_b_stacked: torch.Tensor,
        scale: float,
        *,
        buffer: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        flat_y = y.view(-1, y.shape[-1])
        flat_x = x.view(-1, x.shape[-1])
        groups = self._groups_for(self.sampler_groups, flat_x.shape[0])
        if groups is None:
            return super().add_lora_logits(
                y, x, lora_a_stacked, lora_b_stacked, scale, buffer=buffer, **kwargs
            )
        width = min(lora_b_stacked.shape[-2], flat_y.shape[1])
        grouped_lora_linear(
            flat_y, flat_x, (lora_a_stacked,), (lora_b_stacked,), (width,), groups, scale
        )
        return None
