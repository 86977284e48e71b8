"""`GroupedPunicaWrapperCPU`: vLLM's CPU punica wrapper with grouped LoRA ops.

vLLM asks its platform which punica wrapper to build (`Platform.get_punica_wrapper`); the plugin
points the CPU platform at this subclass. It keeps all of vLLM's metadata handling and adds one
thing per forward step: the batch's rows grouped by adapter slot (`ops.group_rows`), computed
once in `update_metadata` and shared by every LoRA layer of the step. The token-level ops then
run per adapter group instead of per token (see `ops`). Imported only inside vLLM processes.

Under `torch.compile` (which the plugin keeps on with LoRA enabled) the ops called from inside
the model forward (`add_lora_linear`, `add_shrink`, `add_expand`, `add_lora_embedding`) are
dispatched as opaque custom ops, `torch.ops.loraplex.*`: the graph holds one call per layer with
the activations and the stacked weights as arguments, and the per-step plan, which is Python
data, is read when the op runs, never traced. Eager calls skip the dispatcher.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch
from torch.library import Library
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
from vllm.utils.torch_utils import direct_register_custom_op

from services.inference.cpu_lora.ops import (
    RowGroups,
    SlotBlocks,
    blocked_lora_linear,
    blocked_weights,
    group_rows,
    grouped_expand,
    grouped_lora_linear,
    grouped_shrink,
    slot_blocks,
)

if TYPE_CHECKING:
    from vllm.lora.layers import LoRAMapping

_NO_ROWS = RowGroups((), None, 0)
# Cost model of the path choice, calibrated on a 2-core AVX-512 box (see docs/cpu-lora-plugin.md):
# a small torch op costs ~9 us of dispatch, a skinny fp32 matmul runs at ~200 MFLOP per ms.
OP_COST_US = 9.0
FLOP_PER_US = 200_000.0


# Wrappers the custom ops dispatch to, by the address of their `_token_lora_indices` buffer. The
# graph passes that buffer to every op as `handle`: a live tensor of the wrapper, fetched from
# the model like the LoRA weights, never a constant frozen into a (possibly cached) graph.
_WRAPPERS: dict[int, weakref.ref[GroupedPunicaWrapperCPU]] = {}


def _wrapper(handle: torch.Tensor) -> GroupedPunicaWrapperCPU:
    ref = _WRAPPERS.get(handle.data_ptr())
    wrapper = ref() if ref is not None else None
    if wrapper is None:
        raise RuntimeError("loraplex LoRA op called with a handle of no live punica wrapper")
    return wrapper


def _lora_linear_op(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: list[torch.Tensor],
    lora_b: list[torch.Tensor],
    scale: float,
    output_slices: list[int],
    handle: torch.Tensor,
) -> None:
    _wrapper(handle)._lora_linear(y, x, tuple(lora_a), tuple(lora_b), scale, tuple(output_slices))


def _shrink_op(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: list[torch.Tensor],
    scale: float,
    handle: torch.Tensor,
) -> None:
    _wrapper(handle)._shrink(y, x, tuple(lora_a), scale)


def _expand_op(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_b: list[torch.Tensor],
    output_slices: list[int],
    offset_start: int,
    add_inputs: bool,
    handle: torch.Tensor,
) -> None:
    _wrapper(handle)._expand(y, x, tuple(lora_b), tuple(output_slices), offset_start, add_inputs)


def _embedding_op(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_b: torch.Tensor,
    add_inputs: bool,
    handle: torch.Tensor,
) -> None:
    _wrapper(handle)._embedding(y, x, lora_b, add_inputs)


def _no_op(*args: Any, **kwargs: Any) -> None:
    """Fake (meta) implementation: the ops only write into `y`, whose shape is the caller's."""
    return None


_LIBRARY = Library("loraplex", "FRAGMENT")  # the ops live as long as this module
for _name, _func in (
    ("lora_linear", _lora_linear_op),
    ("shrink", _shrink_op),
    ("expand", _expand_op),
    ("embedding", _embedding_op),
):
    direct_register_custom_op(
        _name, _func, mutates_args=["y"], fake_impl=_no_op, target_lib=_LIBRARY, dispatch_key="CPU"
    )


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
        self._slot_blocks: SlotBlocks | None = None
        # Per step: the path chosen for each layer shape. Per layer: the blocked path's weight
        # views, keyed by the stacked tensors' addresses (the entry keeps them alive).
        self._paths: dict[tuple, bool] = {}
        self._views: dict[tuple, tuple[tuple[torch.Tensor, ...], tuple[list, list]]] = {}
        _WRAPPERS[self._token_lora_indices.data_ptr()] = weakref.ref(self)

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
        self._slot_blocks = None
        self._paths = {}

    def _blocked(self, rank: int, widths: int, slices: int) -> bool:
        """Whether batched matmuls over slot blocks beat a matmul pair per adapter group.

        `widths` is the sum of the inner and outer sizes the op multiplies by `rank`. Grouped:
        `3 * slices + 1` ops per group (two matmuls and the per-slot weight views per slice)
        plus a gather and a scatter when groups are interleaved, exact FLOPs. Blocked:
        `2 * slices + 4` ops, FLOPs for `slots in range x largest group` rows. Uniform batches
        go grouped; mixed decode steps go blocked; prefill by size.
        """
        groups = self.token_groups
        if groups.empty:
            return False
        blocks = self._blocks()
        adapter_rows = int(blocks.rows.numel())
        grouped_ops = len(groups.spans) * (3 * slices + 1) + (2 if groups.order is not None else 0)
        grouped = grouped_ops * OP_COST_US + 2 * adapter_rows * rank * widths / FLOP_PER_US
        blocked_flops = 2 * blocks.count * blocks.width * rank * widths
        blocked = (2 * slices + 4) * OP_COST_US + blocked_flops / FLOP_PER_US
        return blocked < grouped

    def _blocks(self) -> SlotBlocks:
        """The step's slot-block layout, built on first use."""
        if self._slot_blocks is None:
            self._slot_blocks = slot_blocks(self.token_groups)
        return self._slot_blocks

    def _blocked_weights(
        self,
        lora_a: tuple[torch.Tensor, ...],
        lora_b: tuple[torch.Tensor, ...],
        output_slices: tuple[int, ...],
        slots: int,
        dtype: torch.dtype,
    ) -> tuple[list, list]:
        """`ops.blocked_weights`, cached per layer when they are views (no dtype conversion)."""
        if lora_a[0].dtype != torch.float32 or lora_b[0].dtype != dtype:
            return blocked_weights(lora_a, lora_b, output_slices, slots, dtype)
        key = (*(t.data_ptr() for t in lora_a), *(t.data_ptr() for t in lora_b), output_slices)
        entry = self._views.get(key)
        if entry is None:
            weights = blocked_weights(lora_a, lora_b, output_slices, slots, dtype)
            entry = self._views[key] = ((*lora_a, *lora_b), weights)
        return entry[1]

    def _groups_for(self, groups: RowGroups, rows: int) -> RowGroups | None:
        """The step's groups, or None when `rows` does not match the mapping (let vLLM decide)."""
        return groups if groups.num_rows == rows else None

    # Entry points vLLM's layers call. Under torch.compile they only emit the custom op; eagerly
    # they run the implementation directly.

    def add_shrink(
        self,
        y: tuple[torch.Tensor, ...] | torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: tuple[torch.Tensor, ...],
        scale: float,
        **kwargs: Any,
    ) -> None:
        if torch.compiler.is_compiling() and isinstance(y, torch.Tensor):
            torch.ops.loraplex.shrink(y, x, list(lora_a_stacked), scale, self._token_lora_indices)
            return None
        return self._shrink(y, x, lora_a_stacked, scale, **kwargs)

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
        if torch.compiler.is_compiling() and isinstance(x, torch.Tensor):
            torch.ops.loraplex.expand(
                y,
                x,
                list(lora_b_stacked),
                list(output_slices),
                offset_start,
                add_inputs,
                self._token_lora_indices,
            )
            return None
        return self._expand(y, x, lora_b_stacked, output_slices, offset_start, add_inputs, **kwargs)

    def add_lora_embedding(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_b_stacked: torch.Tensor,
        add_inputs: bool = True,
        **kwargs: Any,
    ) -> None:
        if torch.compiler.is_compiling():
            torch.ops.loraplex.embedding(y, x, lora_b_stacked, add_inputs, self._token_lora_indices)
            return None
        return self._embedding(y, x, lora_b_stacked, add_inputs, **kwargs)

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
        if torch.compiler.is_compiling():
            torch.ops.loraplex.lora_linear(
                y,
                x,
                list(lora_a_stacked),
                list(lora_b_stacked),
                scale,
                list(output_slices),
                self._token_lora_indices,
            )
            return None
        return self._lora_linear(
            y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer, **kwargs
        )

    # Implementations (eager, or inside the custom ops).

    def _shrink(
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
        if groups.empty:
            return None
        for slice_idx, lora_a in enumerate(lora_a_stacked):
            out = y[slice_idx]
            grouped_shrink(out.view(-1, out.shape[-1]), x, lora_a, groups, scale)
        return None

    def _expand(
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
        if groups.empty:
            return None
        offset = offset_start
        for slice_idx, lora_b in enumerate(lora_b_stacked):
            width = output_slices[slice_idx]
            grouped_expand(flat, x[slice_idx], lora_b, groups, offset, width, add_inputs)
            offset += width
        return None

    def _embedding(
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

    def _lora_linear(
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
        if groups.empty:
            return None
        flat_y = y.view(-1, y.shape[-1])
        flat_x = x.view(-1, x.shape[-1])
        slots, rank = lora_a_stacked[0].shape[0], lora_a_stacked[0].shape[-2]
        output_slices = tuple(output_slices)
        path_key = (rank, flat_x.shape[1], output_slices)
        blocked = self._paths.get(path_key)
        if blocked is None:
            widths = len(output_slices) * flat_x.shape[1] + sum(output_slices)
            blocked = self._paths[path_key] = self._blocked(rank, widths, len(output_slices))
        if blocked:
            weights = self._blocked_weights(
                lora_a_stacked, lora_b_stacked, output_slices, slots, flat_y.dtype
            )
            blocked_lora_linear(
                flat_y,
                flat_x,
                lora_a_stacked,
                lora_b_stacked,
                output_slices,
                self._blocks(),
                scale,
                weights=weights,
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
