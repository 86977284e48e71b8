"""The wrapper's per-step state: path choice, cached weight views, the compiled-graph ops."""

from __future__ import annotations

import torch

from services.inference.cpu_lora.ops import group_rows
from services.inference.cpu_lora.wrapper import GroupedPunicaWrapperCPU

SLOTS, RANK, HIDDEN = 8, 8, 512


def _wrapper(indices: list[int]) -> GroupedPunicaWrapperCPU:
    wrapper = GroupedPunicaWrapperCPU(1024, 8, "cpu")
    wrapper.token_groups = group_rows(indices)
    wrapper._token_lora_indices[: len(indices)] = torch.tensor(indices)
    wrapper.indices_len[0] = len(indices)
    return wrapper


def test_path_choice() -> None:
    widths = 3 * HIDDEN + 3 * HIDDEN
    decode_mix = [slot if row % 3 != 2 else -1 for row, slot in enumerate(list(range(8)) * 2)]
    assert _wrapper(decode_mix)._blocked(RANK, widths, 3)
    one_adapter_mix = [0, 0, -1] * 6
    assert _wrapper(one_adapter_mix)._blocked(RANK, widths, 3)
    assert not _wrapper([0] * 18)._blocked(RANK, widths, 3)
    assert not _wrapper([-1] * 18)._blocked(RANK, widths, 3)
    lopsided_prefill = [0] * 900 + [5] * 10
    assert not _wrapper(lopsided_prefill)._blocked(RANK, widths, 3)


def _layer(generator: torch.Generator) -> tuple[tuple, tuple]:
    lora_a = tuple(torch.randn(SLOTS, 1, RANK, HIDDEN, generator=generator) for _ in range(3))
    lora_b = tuple(torch.randn(SLOTS, 1, HIDDEN, RANK, generator=generator) for _ in range(3))
    return lora_a, lora_b


def test_cached_views_see_a_new_adapter_in_a_slot() -> None:
    """The blocked path caches weight views per layer; a slot reload must not go stale."""
    indices = [slot if row % 3 != 2 else -1 for row, slot in enumerate(list(range(8)) * 2)]
    wrapper = _wrapper(indices)
    lora_a, lora_b = _layer(torch.Generator().manual_seed(0))
    x = torch.randn(len(indices), HIDDEN)
    slices = (HIDDEN,) * 3
    first = torch.zeros(len(indices), 3 * HIDDEN)
    wrapper.add_lora_linear(first, x, lora_a, lora_b, 1.0, slices)
    for tensor in lora_b:
        tensor[1].zero_()
    again = torch.zeros_like(first)
    wrapper.add_lora_linear(again, x, lora_a, lora_b, 1.0, slices)
    rows_of_slot_1 = [row for row, slot in enumerate(indices) if slot == 1]
    assert torch.count_nonzero(again[rows_of_slot_1]) == 0
    other = [row for row, slot in enumerate(indices) if slot not in (1, -1)]
    torch.testing.assert_close(again[other], first[other])


def test_custom_op_matches_eager_and_skips_base_rows() -> None:
    """`torch.ops.loraplex.lora_linear` (what a compiled graph calls) = the eager method."""
    indices = [0, 1, -1, 2, 0, -1, 1, 2, -1]
    wrapper = _wrapper(indices)
    lora_a, lora_b = _layer(torch.Generator().manual_seed(1))
    x = torch.randn(len(indices), HIDDEN)
    y = torch.randn(len(indices), 3 * HIDDEN)
    eager, via_op = y.clone(), y.clone()
    wrapper.add_lora_linear(eager, x, lora_a, lora_b, 0.5, (HIDDEN,) * 3)
    torch.ops.loraplex.lora_linear(
        via_op, x, list(lora_a), list(lora_b), 0.5, [HIDDEN] * 3, wrapper._token_lora_indices
    )
    assert torch.equal(eager, via_op)
    base = [row for row, slot in enumerate(indices) if slot < 0]
    assert torch.equal(via_op[base], y[base])


def test_compiled_graph_calls_the_op_and_reads_the_current_plan() -> None:
    """A graph traced once keeps working when the batch's adapter mix changes afterwards."""
    wrapper = _wrapper([0, 1, -1, 2])
    lora_a, lora_b = _layer(torch.Generator().manual_seed(2))

    def layer(x: torch.Tensor) -> torch.Tensor:
        y = x.repeat(1, 3) * 2.0
        wrapper.add_lora_linear(y, x, lora_a, lora_b, 1.0, (HIDDEN,) * 3)
        return y + 1.0

    compiled = torch.compile(layer, backend="eager", fullgraph=True, dynamic=True)
    for indices in ([0, 1, -1, 2], [-1, -1, -1, -1], [2, 2, 2, -1]):
        wrapper.token_groups = group_rows(indices)
        wrapper._slot_blocks, wrapper._paths = None, {}
        x = torch.randn(4, HIDDEN)
        torch.testing.assert_close(compiled(x), layer(x))
