"""`GroupedPunicaWrapperCPU`: vLLM's CPU punica wrapper with grouped LoRA ops.

vLLM asks its platform which punica wrapper to build (`Platform.get_punica_wrapper`); the plugin
points the CPU platform at this subclass. It keeps all of vLLM's metadata handling and adds one
thing per forward step: a *plan*, the adapter slot of every row of the batch (`[rows, slot of
row 0, ...]`, -1 = no adapter), written in place into a buffer the wrapper owns when vLLM
updates the mapping, and read by every LoRA op of the step. The ops group the rows by slot and
run once per adapter present; rows without an adapter are never touched.

The ops are the C++ ones of `csrc/lora_kernels.cpp` (`torch.ops.loraplex_kernels.*`, built on
first use by `kernels.load`), or the plain-torch ones of `ops` when those cannot be built. Both
are opaque to torch.compile (which the plugin keeps on with LoRA enabled): the graph holds one
call per LoRA layer with the activations, the stacked weights and the plan buffer as
arguments, so nothing about the batch is frozen into it. Imported only inside vLLM processes.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch
from torch.library import Library
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
from vllm.utils.torch_utils import direct_register_custom_op

from services.inference.cpu_lora import kernels
from services.inference.cpu_lora.ops import (
    RowGroups,
    group_rows,
    grouped_expand,
    grouped_lora_linear,
    grouped_shrink,
)

if TYPE_CHECKING:
    from vllm.lora.layers import LoRAMapping

# Wrappers the plain-torch custom ops dispatch to, by the address of their plan buffer. The graph
# passes that buffer to every op as `plan`: a live tensor of the wrapper, fetched from the model
# like the LoRA weights, never a constant frozen into a (possibly cached) graph.
_WRAPPERS: dict[int, weakref.ref[GroupedPunicaWrapperCPU]] = {}


def _wrapper(plan: torch.Tensor) -> GroupedPunicaWrapperCPU:
    ref = _WRAPPERS.get(plan.data_ptr())
    wrapper = ref() if ref is not None else None
    if wrapper is None:
        raise RuntimeError("loraplex LoRA op called with a plan of no live punica wrapper")
    return wrapper


# The plain-torch ops (`torch.ops.loraplex.*`): the fallback when the C++ ops cannot be built, and
# vLLM's sharded layers. Each groups the rows of its plan and runs `ops`; when the rows do not
# match the plan they defer to vLLM's own op.


def _lora_linear_op(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: list[torch.Tensor],
    lora_b: list[torch.Tensor],
    scale: float,
    output_slices: list[int],
    plan: torch.Tensor,
) -> None:
    wrapper = _wrapper(plan)
    flat_x = x.view(-1, x.shape[-1])
    groups = wrapper._groups_for(plan, flat_x.shape[0])
    if groups is None:
        PunicaWrapperCPU.add_lora_linear(
            wrapper, y, x, tuple(lora_a), tuple(lora_b), scale, tuple(output_slices)
        )
        return
    grouped_lora_linear(
        y.view(-1, y.shape[-1]), flat_x, lora_a, lora_b, tuple(output_slices), groups, scale
    )


def _shrink_op(
    y: torch.Tensor,  # or a tuple of per-slice buffers, when called directly (the schema can't)
    x: torch.Tensor,
    lora_a: list[torch.Tensor],
    scale: float,
    plan: torch.Tensor,
) -> None:
    wrapper = _wrapper(plan)
    x = x.view(-1, x.shape[-1])
    groups = wrapper._groups_for(plan, x.shape[0])
    if groups is None:
        PunicaWrapperCPU.add_shrink(wrapper, y, x, tuple(lora_a), scale)
        return
    for slice_idx, weights in enumerate(lora_a):
        out = y[slice_idx]
        grouped_shrink(out.view(-1, out.shape[-1]), x, weights, groups, scale)


def _expand_op(
    y: torch.Tensor,
    x: torch.Tensor,  # or a tuple of per-slice inputs, when called directly (the schema can't)
    lora_b: list[torch.Tensor],
    output_slices: list[int],
    offset_start: int,
    add_inputs: bool,
    plan: torch.Tensor,
) -> None:
    wrapper = _wrapper(plan)
    flat = y.view(-1, y.shape[-1])
    groups = wrapper._groups_for(plan, flat.shape[0])
    if groups is None:
        PunicaWrapperCPU.add_expand(
            wrapper, y, x, tuple(lora_b), tuple(output_slices), offset_start, add_inputs
        )
        return
    offset = offset_start
    for slice_idx, weights in enumerate(lora_b):
        width = output_slices[slice_idx]
        grouped_expand(flat, x[slice_idx], weights, groups, offset, width, add_inputs)
        offset += width


def _embedding_op(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_b: torch.Tensor,
    add_inputs: bool,
    plan: torch.Tensor,
) -> None:
    wrapper = _wrapper(plan)
    groups = wrapper._groups_for(plan, y.shape[0])
    if groups is None:
        PunicaWrapperCPU.add_lora_embedding(wrapper, y, x, lora_b, add_inputs)
        return
    grouped_expand(y, x, lora_b, groups, add_inputs=add_inputs)


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


def _write_plan(plan: torch.Tensor, indices: torch.Tensor) -> None:
    """`plan[0]` = rows, `plan[1 + row]` = the row's adapter slot."""
    rows = indices.numel()
    plan[0] = rows
    plan[1 : rows + 1].copy_(indices)


class GroupedPunicaWrapperCPU(PunicaWrapperCPU):
    """Punica wrapper whose ops run once per adapter present in the batch (C++ or plain torch)."""

    def __init__(
        self,
        max_num_batched_tokens: int,
        max_batches: int,
        device: torch.device | str,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_num_batched_tokens, max_batches, device, **kwargs)
        # Plans of the step: token rows (every layer) and sampled rows (the LoRA logits).
        self._plan = torch.zeros(self._token_lora_indices.numel() + 1, dtype=torch.long)
        self._sampler_plan = torch.zeros(self._sampler_indices.numel() + 1, dtype=torch.long)
        # The plans' rows grouped by slot, for the plain-torch ops (built on first use per step).
        self._groups: dict[int, RowGroups] = {}
        self._kernels = kernels.load()
        for plan in (self._plan, self._sampler_plan):
            _WRAPPERS[plan.data_ptr()] = weakref.ref(self)

    def update_metadata(
        self,
        mapping: LoRAMapping,
        lora_index_to_id: list[int | None],
        max_loras: int,
        vocab_size: int,
        **kwargs: Any,
    ) -> None:
        super().update_metadata(mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        _write_plan(self._plan, self.token_lora_indices)
        _write_plan(self._sampler_plan, self.sampler_indices)
        self._groups.clear()

    def _groups_for(self, plan: torch.Tensor, rows: int) -> RowGroups | None:
        """`plan`'s rows grouped by slot, or None when `rows` does not match it (vLLM decides)."""
        groups = self._groups.get(plan.data_ptr())
        if groups is None:
            groups = self._groups[plan.data_ptr()] = group_rows(plan[1 : int(plan[0]) + 1])
        return groups if groups.num_rows == rows else None

    # Entry points vLLM's layers call: the C++ op, else the plain-torch custom op (eagerly, or
    # emitted into a graph under torch.compile alike).

    def add_lora_linear(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: tuple[torch.Tensor, ...],
        lora_b_stacked: tuple[torch.Tensor, ...],
        scale: float,
        output_slices: tuple[int, ...],
        **kwargs: Any,
    ) -> None:
        ops = torch.ops.loraplex_kernels if self._kernels else torch.ops.loraplex
        ops.lora_linear(
            y, x, list(lora_a_stacked), list(lora_b_stacked), scale, list(output_slices), self._plan
        )

    def add_lora_embedding(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_b_stacked: torch.Tensor,
        add_inputs: bool = True,
        **kwargs: Any,
    ) -> None:
        if self._kernels:
            torch.ops.loraplex_kernels.lora_embedding(y, x, lora_b_stacked, add_inputs, self._plan)
        else:
            torch.ops.loraplex.embedding(y, x, lora_b_stacked, add_inputs, self._plan)

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
        """Runs outside the compiled forward, once per step, on the sampled rows."""
        flat_y = y.view(-1, y.shape[-1])
        flat_x = x.view(-1, x.shape[-1])
        width = min(lora_b_stacked.shape[-2], flat_y.shape[1])
        if self._kernels:
            torch.ops.loraplex_kernels.lora_linear(
                flat_y,
                flat_x,
                [lora_a_stacked],
                [lora_b_stacked],
                scale,
                [width],
                self._sampler_plan,
            )
            return None
        groups = self._groups_for(self._sampler_plan, flat_x.shape[0])
        if groups is None:
            return super().add_lora_logits(
                y, x, lora_a_stacked, lora_b_stacked, scale, buffer=buffer, **kwargs
            )
        grouped_lora_linear(
            flat_y, flat_x, (lora_a_stacked,), (lora_b_stacked,), (width,), groups, scale
        )
        return None

    def add_shrink(
        self,
        y: tuple[torch.Tensor, ...] | torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: tuple[torch.Tensor, ...],
        scale: float,
        **kwargs: Any,
    ) -> None:
        """Called only by vLLM's sharded layers (the fused `add_lora_linear` otherwise); a tuple
        of output buffers does not fit an op schema, so it runs the implementation directly."""
        shrink = torch.ops.loraplex.shrink if isinstance(y, torch.Tensor) else _shrink_op
        shrink(y, x, list(lora_a_stacked), scale, self._plan)

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
        """As `add_shrink`, for the expand (a tuple of inputs runs the implementation directly)."""
        expand = torch.ops.loraplex.expand if isinstance(x, torch.Tensor) else _expand_op
        expand(
            y, x, list(lora_b_stacked), list(output_slices), offset_start, add_inputs, self._plan
        )
