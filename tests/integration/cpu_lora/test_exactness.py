"""vLLM CPU + the loraplex plugin is token-identical to peft, and mixed batches stay correct.

One engine for the module (fp32, max_loras equal to the number of adapters so every slot is
taken, which is what exposes upstream's "index -1 selects the last slot" bug), three adapters of
rank 8, 16 and 64 on all linear layers, one of rank 8 on q/v only and one of rank 8 on the
last decoder layer only (`layers_to_transform`, what training's `lora.last_layers` saves),
greedy decoding.
References come from transformers + peft `generate` on the same weights and prompt token ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.inference.cpu_lora import kernels
from tests.integration.cpu_lora.engine_run import (
    build_engine,
    generate_batches,
    punica_wrapper_state,
)
from tests.tiny_llm import TARGET_MODULES, build_tiny_llama, make_random_lora

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
RANKS = (8, 16, 64)
# (name, rank, modules, layers): every rank on every linear layer, an adapter on q/v only, whose
# zeroed k/o/MLP slots (and every adapter's zeroed logits slot) the C++ ops skip, and one on the
# second (last) of the two decoder layers only, whose first layer's slots stay empty
ADAPTERS = (
    *((f"r{rank}", rank, TARGET_MODULES, None) for rank in RANKS),
    ("qv8", 8, ("q_proj", "v_proj"), None),
    ("last8", 8, TARGET_MODULES, (1,)),
)
NEW_TOKENS = 12
PROMPTS = (
    "the quick brown fox",
    "question: who approves travel? answer:",
    "hello world, this is",
    "sources [1] [2] according to",
)


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny model, one adapter per rank, prompt token ids and peft's greedy references."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer, LlamaForCausalLM

    root = tmp_path_factory.mktemp("cpu-lora")
    model = build_tiny_llama(root / "base")
    adapters = [
        str(make_random_lora(root / name, model, rank, 10 + index, modules, 0.3, layers=layers))
        for index, (name, rank, modules, layers) in enumerate(ADAPTERS)
    ]
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]

    peft_model = PeftModel.from_pretrained(
        LlamaForCausalLM.from_pretrained(model, dtype=torch.float32), adapters[0], "a0"
    )
    for index, folder in enumerate(adapters[1:], start=1):
        peft_model.load_adapter(folder, adapter_name=f"a{index}")
    peft_model.eval()
    reference: dict[tuple[int, str | None], list[int]] = {}
    with torch.inference_mode():
        for p_index, tokens in enumerate(prompts):
            for a_index, folder in enumerate([None, *adapters]):
                name = "__base__" if folder is None else f"a{a_index - 1}"
                out = peft_model.generate(
                    torch.tensor([tokens]),
                    attention_mask=torch.ones(1, len(tokens), dtype=torch.long),
                    adapter_names=[name],
                    do_sample=False,
                    max_new_tokens=NEW_TOKENS,
                    min_new_tokens=NEW_TOKENS,
                    pad_token_id=tokenizer.eos_token_id,
                )
                reference[(p_index, folder)] = out[0, len(tokens) :].tolist()
    return {"model": str(model), "adapters": adapters, "prompts": prompts, "ref": reference}


@pytest.fixture(scope="module")
def llm(assets: dict):
    """The plugin-enabled engine (the plugin loads through vLLM's entry point in this venv)."""
    if os.environ.get("LORAPLEX_CPU_LORA", "1") == "0":
        pytest.skip("plugin disabled by LORAPLEX_CPU_LORA=0")
    # lets `collective_rpc` ship a test function to the worker (pickle), read by both sides at
    # every call; test engines only
    saved = os.environ.get("VLLM_ALLOW_INSECURE_SERIALIZATION")
    os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    engine = build_engine(assets["model"], max_loras=len(ADAPTERS), max_rank=max(RANKS))
    yield engine
    del engine
    if saved is None:
        os.environ.pop("VLLM_ALLOW_INSECURE_SERIALIZATION")
    else:
        os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = saved


def _check(assets: dict, llm, batches: list[list[tuple[int, str | None]]]) -> None:
    rows = [[(assets["prompts"][p], folder) for p, folder in batch] for batch in batches]
    outputs = generate_batches(llm, rows, NEW_TOKENS)
    for batch, out in zip(batches, outputs, strict=True):
        for (p_index, folder), tokens in zip(batch, out, strict=True):
            label = f"prompt {p_index}, adapter {Path(folder).name if folder else 'base'}"
            assert tokens == assets["ref"][(p_index, folder)], label


def _slots(assets: dict) -> list[str | None]:
    return [None, *assets["adapters"]]


def test_adapters_change_outputs(assets: dict) -> None:
    """Guards the test itself: every adapter's greedy output differs from the base model's."""
    for p_index in range(len(PROMPTS)):
        base = assets["ref"][(p_index, None)]
        for folder in assets["adapters"]:
            assert assets["ref"][(p_index, folder)] != base


def test_engine_runs_the_grouped_wrapper_with_the_cpp_ops(llm) -> None:
    """Guards the tests below: they exercise the plugin's C++ ops, not a fallback."""
    expected = ("GroupedPunicaWrapperCPU", kernels.load())
    assert llm.collective_rpc(punica_wrapper_state) == [expected]


def test_single_requests_match_peft(assets: dict, llm) -> None:
    _check(assets, llm, [[(p, folder)] for folder in _slots(assets) for p in range(2)])


def test_uniform_batches_match_peft(assets: dict, llm) -> None:
    _check(assets, llm, [[(p, folder) for p in range(len(PROMPTS))] for folder in _slots(assets)])


def test_mixed_batches_match_peft(assets: dict, llm) -> None:
    """Base rows next to every adapter in one batch, each prompt under each adapter once."""
    _check(assets, llm, _mixed_batches(assets))


def _mixed_batches(assets: dict) -> list[list[tuple[int, str | None]]]:
    slots = _slots(assets)
    return [
        [(p, slots[(p + shift) % len(slots)]) for p in range(len(PROMPTS))]
        for shift in range(len(slots))
    ]


def _run_in_child(
    assets: dict, tmp_path: Path, batches: list, env: dict[str, str]
) -> list[list[list[int]]]:
    """The batches' greedy outputs from an engine in a child process with `env` set."""
    spec = {
        "model": assets["model"],
        "max_loras": len(ADAPTERS),
        "max_rank": max(RANKS),
        "new_tokens": NEW_TOKENS,
        "batches": [[(assets["prompts"][p], folder) for p, folder in batch] for batch in batches],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.cpu_lora.engine_run",
            str(tmp_path / "spec.json"),
        ],
        cwd=ROOT,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=1800,  # a hang guard only: an engine start takes minutes on a loaded machine
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("OUTPUTS ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("OUTPUTS "))


def test_plain_torch_fallback_matches_peft_in_mixed_batches(assets: dict, tmp_path: Path) -> None:
    """Without the C++ ops (no compiler, or `LORAPLEX_CPU_LORA_KERNELS=0`) results are the same."""
    batches = _mixed_batches(assets)
    outputs = _run_in_child(assets, tmp_path, batches, {"LORAPLEX_CPU_LORA_KERNELS": "0"})
    for batch, out in zip(batches, outputs, strict=True):
        for (p_index, folder), tokens in zip(batch, out, strict=True):
            assert tokens == assets["ref"][(p_index, folder)], (p_index, folder)


def test_unpatched_vllm_corrupts_base_rows_in_mixed_batches(assets: dict, tmp_path: Path) -> None:
    """The upstream bug the plugin fixes, reproduced with the plugin off in a child process."""
    slots = _slots(assets)  # every adapter in the batch: all slots taken, the last one too
    batch = [(row % len(PROMPTS), folder) for row, folder in enumerate(slots)]
    outputs = _run_in_child(assets, tmp_path, [batch], {"LORAPLEX_CPU_LORA": "0"})[0]
    base_rows = [i for i, (_, folder) in enumerate(batch) if folder is None]
    assert base_rows
    for row in base_rows:
        assert outputs[row] != assets["ref"][(batch[row][0], None)], "bug no longer reproduces"
