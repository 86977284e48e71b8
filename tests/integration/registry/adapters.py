"""Real PEFT LoRA adapter folders (adapter_config.json + safetensors), made without a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def make_lora_adapter(
    folder: Path,
    rank: int = 8,
    base_model: str = BASE_MODEL,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    peft_type: str = "LORA",
) -> Path:
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(layers):
        for target in targets:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((rank, hidden), np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((hidden, rank), np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": peft_type,
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "target_modules": list(targets),
        "task_type": "CAUSAL_LM",
        "bias": "none",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def make_big_adapter(folder: Path, megabytes: int) -> Path:
    """A rank-64 LoRA adapter whose weights are about `megabytes` MB (for benchmarks)."""
    hidden, rank, targets = 2048, 64, ("q_proj", "k_proj", "v_proj", "o_proj")
    pair_bytes = 2 * hidden * rank * 4
    layers = max(1, round(megabytes * 1e6 / pair_bytes / len(targets)))
    return make_lora_adapter(folder, rank=rank, hidden=hidden, layers=layers, targets=targets)
