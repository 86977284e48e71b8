"""The C++ LoRA ops (`torch.ops.loraplex_kernels`) against a naive per-row reference."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from services.inference.cpu_lora import kernels
from tests.unit.cpu_lora.reference import BATCHES as SHARED_BATCHES
from tests.unit.cpu_lora.reference import naive_lora as naive

# Where a compiler exists (CI, the CPU image, `make setup`) the ops must build: a failed build
# would otherwise only show as slower engines.
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")


def test_ops_build_and_load() -> None:
    assert kernels.load(), "the C++ LoRA ops failed to build: see the warning logged above"


@pytest.fixture(scope="session")
def portable_build(tmp_path_factory):
    """The same source without its AVX-512 code (what ARM and older x86 CPUs run), under its own
    op namespace so it loads beside the native build."""
    kernels.compile_ops(
        tmp_path_factory.mktemp("portable-ops"),
        "loraplex_cpu_lora_kernels_portable",
        ("LORAPLEX_PORTABLE", "LORAPLEX_OPS_NAMESPACE=loraplex_kernels_portable"),
    )
    return torch.ops.loraplex_kernels_portable


@pytest.fixture(params=["native", "portable"])
def ops(request):
    if request.param == "portable":
        return request.getfixturevalue("portable_build")
    assert kernels.load()
    return torch.ops.loraplex_kernels


SLOTS = 4
BATCHES = {
    **SHARED_BATCHES,
    # groups of 32+ rows take the ATen matmul path, contiguous or not
    "large groups": [1] * 40 + [-1] * 5 + [2, -1] * 36,
}


def plan_of(indices: list[int]) -> torch.Tensor:
    return torch.tensor([len(indices), *indices], dtype=torch.long)


def stacked(rank: int, dim: int, slices: tuple[int, ...], seed: int = 0) -> tuple[list, list]:
    generator = torch.Generator().manual_seed(seed)
    lora_a = [torch.randn(SLOTS, 1, rank, dim, generator=generator) for _ in slices]
    lora_b = [torch.randn(SLOTS, 1, width, rank, generator=generator) for width in slices]
    return lora_a, lora_b


@pytest.mark.parametrize("indices", BATCHES.values(), ids=BATCHES.keys())
@pytest.mark.parametrize("rank", [8, 16, 32, 64, 12])
def test_lora_linear_matches_naive(ops, indices, rank) -> None:
    """Every rank the fixed-size expands handle, and one (12) that takes the generic loop; slice
    widths with whole 16-output vectors, a remainder, and a remainder alone."""
    slices, dim = (40, 16, 8), 40
    lora_a, lora_b = stacked(rank, dim, slices)
    x, y = torch.randn(len(indices), dim), torch.randn(len(indices), sum(slices))
    expected = naive(y, x, indices, lora_a, lora_b, slices, 0.5)
    got = y.clone()
    ops.lora_linear(got, x, lora_a, lora_b, 0.5, list(slices), plan_of(indices))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    base_rows = [row for row, slot in enumerate(indices) if slot < 0]
    assert torch.equal(got[base_rows], y[base_rows])


def test_lora_linear_strided_inputs_padded_b_and_3d_activations(ops) -> None:
    """x a column slice of a wider buffer, B padded beyond the slice, [1, rows, dim] shapes."""
    indices = BATCHES["decode mixed"]
    slices = (16, 8)
    lora_a, lora_b = stacked(8, 32, (24, 12))  # B rows padded beyond the slice widths
    wide = torch.randn(len(indices), 48)
    x = wide[:, 8:40]
    assert not x.is_contiguous()
    y = torch.randn(1, len(indices), sum(slices))
    expected = naive(y[0], x, indices, lora_a, lora_b, slices, 1.0)
    ops.lora_linear(
        y, x.unsqueeze(0).contiguous(), lora_a, lora_b, 1.0, list(slices), plan_of(indices)
    )
    torch.testing.assert_close(y[0], expected, rtol=1e-4, atol=1e-4)
    strided_y = torch.randn(len(indices), sum(slices))
    expected = naive(strided_y, x, indices, lora_a, lora_b, slices, 1.0)
    ops.lora_linear(strided_y, x, lora_a, lora_b, 1.0, list(slices), plan_of(indices))
    torch.testing.assert_close(strided_y, expected, rtol=1e-4, atol=1e-4)


def test_lora_linear_bfloat16_takes_the_matmul_path() -> None:
    indices = BATCHES["decode mixed"]
    slices = (16,)
    lora_a, lora_b = stacked(8, 32, slices)
    lora_a = [t.bfloat16() for t in lora_a]
    lora_b = [t.bfloat16() for t in lora_b]
    x = torch.randn(len(indices), 32, dtype=torch.bfloat16)
    y = torch.randn(len(indices), 16, dtype=torch.bfloat16)
    expected = naive(y, x, indices, lora_a, lora_b, slices, 1.0)
    got = y.clone()
    torch.ops.loraplex_kernels.lora_linear(got, x, lora_a, lora_b, 1.0, [16], plan_of(indices))
    torch.testing.assert_close(got, expected, rtol=2e-2, atol=2e-2)
    base_rows = [row for row, slot in enumerate(indices) if slot < 0]
    assert torch.equal(got[base_rows], y[base_rows])


@pytest.mark.parametrize("add_inputs", [True, False])
@pytest.mark.parametrize("indices", BATCHES.values(), ids=BATCHES.keys())
def test_lora_embedding(ops, indices, add_inputs) -> None:
    """y[row] (+)= x[row] @ B[slot]^T on adapter rows; B may be wider than y (vocab padding)."""
    generator = torch.Generator().manual_seed(3)
    lora_b = torch.randn(SLOTS, 1, 20, 8, generator=generator)
    x, y = torch.randn(len(indices), 8), torch.randn(len(indices), 16)
    expected = y.clone()
    for row, slot in enumerate(indices):
        if slot >= 0:
            delta = x[row] @ lora_b[slot, 0, :16].T
            expected[row] = expected[row] + delta if add_inputs else delta
    got = y.clone()
    ops.lora_embedding(got, x, lora_b, add_inputs, plan_of(indices))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", ["decode mixed", "large groups"])
def test_slots_with_empty_b_are_skipped_until_written(batch: str) -> None:
    """vLLM zeroes a slot's B in every module its adapter does not adapt: the op skips those
    (slot, slice) pairs, and takes them up again once anything writes into the tensor (loop
    path and matmul path)."""
    assert kernels.load()
    ops = torch.ops.loraplex_kernels
    indices = BATCHES[batch]
    slices = (16, 8)
    lora_a, lora_b = stacked(8, 32, slices, seed=7)
    lora_b[0][2] = 0  # slot 2 has no weights in the first slice (e.g. no q_proj)
    lora_b[1][0] = 0
    assert ops.live_slots(lora_b[0]).tolist() == [True, True, False, True]
    assert ops.live_slots(lora_b[1]).tolist() == [False, True, True, True]

    def check() -> None:
        x, y = torch.randn(len(indices), 32), torch.randn(len(indices), sum(slices))
        expected = naive(y, x, indices, lora_a, lora_b, slices, 0.5)
        ops.lora_linear(y, x, lora_a, lora_b, 0.5, list(slices), plan_of(indices))
        torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)

    check()
    lora_b[0][2, 0, :4].copy_(torch.ones(4, 8))  # set_lora: an in-place write through a view
    assert ops.live_slots(lora_b[0]).tolist() == [True, True, True, True]
    check()
    lora_b[0][1] = 0  # reset_lora
    assert ops.live_slots(lora_b[0]).tolist() == [True, False, True, True]
    check()


def test_slot_liveness_is_not_inherited_by_a_new_tensor_at_the_same_address() -> None:
    assert kernels.load()
    ops = torch.ops.loraplex_kernels
    for _ in range(20):  # the allocator hands a freed block straight back, often
        empty = torch.zeros(SLOTS, 1, 512, 8)
        assert ops.live_slots(empty).tolist() == [False] * SLOTS
        address = empty.data_ptr()
        del empty
        weights = torch.ones(SLOTS, 1, 512, 8)  # version 0 again, maybe the same address
        assert ops.live_slots(weights).tolist() == [True] * SLOTS, address == weights.data_ptr()
        del weights


def test_inference_tensors_count_as_live() -> None:
    """Inference-mode tensors have no version counter: nothing can be vouched for."""
    assert kernels.load()
    with torch.inference_mode():
        empty = torch.zeros(SLOTS, 1, 16, 8)
    assert torch.ops.loraplex_kernels.live_slots(empty).tolist() == [True] * SLOTS


def test_plan_must_match_the_batch() -> None:
    lora_a, lora_b = stacked(8, 16, (8,))
    x, y = torch.randn(4, 16), torch.randn(4, 8)
    with pytest.raises(
        RuntimeError, match="called with 4 rows but the step's adapter mapping has 3"
    ):
        torch.ops.loraplex_kernels.lora_linear(y, x, lora_a, lora_b, 1.0, [8], plan_of([0, 1, 2]))
    with pytest.raises(RuntimeError, match="names slot 7 of 4"):
        torch.ops.loraplex_kernels.lora_linear(
            y, x, lora_a, lora_b, 1.0, [8], plan_of([0, 7, 1, 2])
        )


def test_load_can_be_switched_off_and_survives_a_failed_build(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`LORAPLEX_CPU_LORA_KERNELS=0` and a build failure both mean: plain-torch ops."""
    monkeypatch.setattr(torch.ops, "loraplex_kernels", None, raising=False)
    kernels.load.cache_clear()
    try:
        monkeypatch.setenv(kernels.KERNELS_ENV, "0")
        assert kernels.load() is False
        kernels.load.cache_clear()
        monkeypatch.delenv(kernels.KERNELS_ENV)

        def no_compiler(**kwargs):
            raise RuntimeError("Error building extension: g++ not found")

        monkeypatch.setattr("torch.utils.cpp_extension.load", no_compiler)
        with caplog.at_level(logging.WARNING, logger=kernels.__name__):
            assert kernels.load() is False
        assert "g++ not found" in caplog.text and "plain-torch" in caplog.text
    finally:
        monkeypatch.undo()
        kernels.load.cache_clear()
    assert kernels.load() is True


def test_lora_linear_spreads_over_intra_op_threads() -> None:
    """Enough work runs its (slot, slice) items on several threads: same result."""
    # 20 interleaved rows per slot: every group stays on the loop path, and the call does
    # enough multiply-adds to be split
    indices = [row % SLOTS if row % 5 else -1 for row in range(100)]
    slices, dim = (96, 64, 64), 128
    lora_a, lora_b = stacked(16, dim, slices, seed=5)
    x, y = torch.randn(len(indices), dim), torch.randn(len(indices), sum(slices))
    expected = naive(y, x, indices, lora_a, lora_b, slices, 1.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = y.clone()
        torch.ops.loraplex_kernels.lora_linear(
            got, x, lora_a, lora_b, 1.0, list(slices), plan_of(indices)
        )
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
