"""The wrapper's per-step plan and its ops: C++ and plain torch, eager and compiled."""

from __future__ import annotations

import pytest
import torch
from vllm.lora.layers import LoRAMapping

from services.inference.cpu_lora import kernels
from services.inference.cpu_lora.wrapper import GroupedPunicaWrapperCPU, _write_plan
from tests.unit.cpu_lora.reference import naive_lora

SLOTS, RANK, HIDDEN = 8, 8, 64
MIXED = [0, 1, -1, 2, 0, -1, 1, 2, -1]


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """The ops reorder float32 sums against the reference (and the C++ against the plain ops)."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def _wrapper(indices: list[int], use_kernels: bool = True) -> GroupedPunicaWrapperCPU:
    wrapper = GroupedPunicaWrapperCPU(1024, 8, "cpu")
    wrapper._kernels = use_kernels and kernels.load()
    _set_batch(wrapper, indices)
    return wrapper


def _set_batch(wrapper: GroupedPunicaWrapperCPU, indices: list[int]) -> None:
    """What `update_metadata` leaves behind for a batch with these slots."""
    wrapper._token_lora_indices[: len(indices)] = torch.tensor(indices)
    wrapper.indices_len[0] = len(indices)
    _write_plan(wrapper._plan, wrapper.token_lora_indices)
    wrapper._groups.clear()


def _layer(generator: torch.Generator) -> tuple[tuple, tuple]:
    lora_a = tuple(torch.randn(SLOTS, 1, RANK, HIDDEN, generator=generator) for _ in range(3))
    lora_b = tuple(torch.randn(SLOTS, 1, HIDDEN, RANK, generator=generator) for _ in range(3))
    return lora_a, lora_b


def _naive(y, x, indices, lora_a, lora_b, scale=1.0):
    return naive_lora(y, x, indices, lora_a, lora_b, (HIDDEN,) * 3, scale)


def test_update_metadata_writes_the_plan() -> None:
    """Rows without an adapter (id 0) get slot -1; adapter ids map to the slot holding them."""
    wrapper = GroupedPunicaWrapperCPU(1024, 8, "cpu")
    lora_index_to_id = [7, 3, 9] + [None] * 5
    mapping = LoRAMapping(index_mapping=(3, 0, 9, 9, 7, 0), prompt_mapping=(3, 0, 9, 9, 7, 0))
    wrapper.update_metadata(mapping, lora_index_to_id, SLOTS, 320)
    assert wrapper._plan[:7].tolist() == [6, 1, -1, 2, 2, 0, -1]
    assert wrapper._sampler_plan[:7].tolist() == [6, 1, -1, 2, 2, 0, -1]
    assert wrapper._groups_for(wrapper._plan, 6).spans == ((1, 0, 1), (2, 2, 4), (0, 4, 5))


@pytest.mark.parametrize("use_kernels", [True, False], ids=["c++", "plain torch"])
def test_add_lora_linear_matches_naive_and_skips_base_rows(use_kernels: bool) -> None:
    if use_kernels and not kernels.load():
        pytest.skip("C++ LoRA ops could not be built")
    wrapper = _wrapper(MIXED, use_kernels)
    lora_a, lora_b = _layer(torch.Generator().manual_seed(1))
    x = torch.randn(len(MIXED), HIDDEN)
    y = torch.randn(len(MIXED), 3 * HIDDEN)
    got = y.clone()
    wrapper.add_lora_linear(got, x, lora_a, lora_b, 0.5, (HIDDEN,) * 3)
    _close(got, _naive(y, x, MIXED, lora_a, lora_b, 0.5))
    base = [row for row, slot in enumerate(MIXED) if slot < 0]
    assert torch.equal(got[base], y[base])
    # the plain-torch custom op (what a compiled graph calls without the C++ ops) agrees
    via_op = y.clone()
    torch.ops.loraplex.lora_linear(
        via_op, x, list(lora_a), list(lora_b), 0.5, [HIDDEN] * 3, wrapper._plan
    )
    _close(via_op, got)


@pytest.mark.parametrize("use_kernels", [True, False], ids=["c++", "plain torch"])
def test_embedding_and_logits_follow_their_plans(use_kernels: bool) -> None:
    if use_kernels and not kernels.load():
        pytest.skip("C++ LoRA ops could not be built")
    wrapper = _wrapper(MIXED, use_kernels)
    sampled = [2, -1, 0]
    _write_plan(wrapper._sampler_plan, torch.tensor(sampled))
    wrapper._groups.clear()
    generator = torch.Generator().manual_seed(4)
    lora_b = torch.randn(SLOTS, 1, HIDDEN, RANK, generator=generator)
    x, y = torch.randn(len(MIXED), RANK), torch.randn(len(MIXED), HIDDEN)
    got = y.clone()
    wrapper.add_lora_embedding(got, x, lora_b, add_inputs=True)
    for row, slot in enumerate(MIXED):
        expected = y[row] + (x[row] @ lora_b[slot, 0].T if slot >= 0 else 0)
        _close(got[row], expected)
    head_a = torch.randn(SLOTS, 1, RANK, HIDDEN, generator=generator)
    head_b = torch.randn(SLOTS, 1, 40, RANK, generator=generator)
    hidden, logits = torch.randn(3, HIDDEN), torch.randn(3, 32)  # vocab padded to 40 in B
    got = logits.clone()
    wrapper.add_lora_logits(got, hidden, head_a, head_b, 1.0)
    for row, slot in enumerate(sampled):
        delta = (hidden[row] @ head_a[slot, 0].T) @ head_b[slot, 0, :32].T if slot >= 0 else 0
        _close(got[row], logits[row] + delta)


@pytest.mark.parametrize("use_kernels", [True, False], ids=["c++", "plain torch"])
def test_compiled_graph_reads_the_current_plan(use_kernels: bool) -> None:
    """A graph traced once (through AOT functionalization of the mutating op) keeps working
    when the batch's adapter mix changes afterwards."""
    if use_kernels and not kernels.load():
        pytest.skip("C++ LoRA ops could not be built")
    wrapper = _wrapper([0, 1, -1, 2], use_kernels)
    lora_a, lora_b = _layer(torch.Generator().manual_seed(2))

    def layer(x: torch.Tensor) -> torch.Tensor:
        y = x.repeat(1, 3) * 2.0
        wrapper.add_lora_linear(y, x, lora_a, lora_b, 1.0, (HIDDEN,) * 3)
        return y + 1.0

    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True, dynamic=True)
    for indices in ([0, 1, -1, 2], [-1, -1, -1, -1], [2, 2, 2, -1], [5, -1, 7, 7, 0, -1]):
        _set_batch(wrapper, indices)
        x = torch.randn(len(indices), HIDDEN)
        expected = _naive(x.repeat(1, 3) * 2.0, x, indices, lora_a, lora_b) + 1.0
        _close(compiled(x), expected)
