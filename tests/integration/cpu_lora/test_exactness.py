"""vLLM CPU + the loraplex plugin is token-identical to peft, and mixed batches stay correct.

One engine for the module (fp32, max_loras equal to the number of adapters so every slot is
taken, which is what exposes upstream's "index -1 selects the last slot" bug), three adapters of
rank 8, 16 and 64 on all linear layers, greedy decoding. References come from transformers +
peft `generate` on the same weights and the same prompt token ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cpu_lora.engine_run import build_engine, generate_batches
from tests.tiny_llm import TARGET_MODULES, build_tiny_llama, make_random_lora

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
RANKS = (8, 16, 64)
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
        str(make_random_lora(root / f"r{rank}", model, rank, 10 + rank, TARGET_MODULES, 0.3))
        for rank in RANKS
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
    engine = build_engine(assets["model"], max_loras=len(RANKS), max_rank=max(RANKS))
    yield engine
    del engine


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


def test_single_requests_match_peft(assets: dict, llm) -> None:
    _check(assets, llm, [[(p, folder)] for folder in _slots(assets) for p in range(2)])


def test_uniform_batches_match_peft(assets: dict, llm) -> None:
    _check(assets, llm, [[(p, folder) for p in range(len(PROMPTS))] for folder in _slots(assets)])


def test_mixed_batches_match_peft(assets: dict, llm) -> None:
    """Base rows next to every adapter in one batch, each prompt under each adapter once."""
    slots = _slots(assets)
    batches = [
        [(p, slots[(p + shift) % len(slots)]) for p in range(len(PROMPTS))]
        for shift in range(len(slots))
    ]
    _check(assets, llm, batches)


def test_unpatched_vllm_corrupts_base_rows_in_mixed_batches(assets: dict, tmp_path: Path) -> None:
    """The upstream bug the plugin fixes, reproduced with the plugin off in a child process."""
    slots = _slots(assets)
    batch = [(p, slots[p % len(slots)]) for p in range(len(PROMPTS))]
    spec = {
        "model": assets["model"],
        "max_loras": len(RANKS),
        "max_rank": max(RANKS),
        "new_tokens": NEW_TOKENS,
        "batches": [[(assets["prompts"][p], folder) for p, folder in batch]],
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
        env=dict(os.environ, LORAPLEX_CPU_LORA="0"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("OUTPUTS ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    outputs = json.loads(lines[-1].removeprefix("OUTPUTS "))[0]
    base_rows = [i for i, (_, folder) in enumerate(batch) if folder is None]
    assert base_rows
    for row in base_rows:
        assert outputs[row] != assets["ref"][(batch[row][0], None)], "bug no longer reproduces"
