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
)

if TYPE_CHECKING:
    from vllm.lora.layers import LoRAMapping

_NO_ROWS = RowGroups((), None, 0)


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
            grouped_shrink(out.view(-1, out.shape[-1]), x, lora_a, groups, scale)
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
