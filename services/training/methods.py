"""Turns a base model into the trainable model a method asks for, and saves the result.

Adapter methods wrap the base with peft and save only the adapter (safetensors);
full and last-layers training update the base's own weights and save a model folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from services.training.spec import ADAPTER_METHODS, JobSpec

log = logging.getLogger(__name__)

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def attention_targets(model: nn.Module) -> list[str] | None:
    """The model's attention projections, or None to let peft pick its per-model default."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
    found = [p for p in ATTENTION_PROJECTIONS if p in names]
    return found or None


def peft_config(spec: JobSpec, model: nn.Module) -> Any:
    import peft

    if spec.method in ("lora", "qlora"):
        lora = spec.lora
        return peft.LoraConfig(
            task_type="CAUSAL_LM",
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules) or attention_targets(model),
            init_lora_weights="pissa" if lora.init == "pissa" else True,
            layers_to_transform=last_layer_indices(model, lora.last_layers),
        )
    if spec.method == "ia3":
        return peft.IA3Config(task_type="CAUSAL_LM")
    if spec.method == "prompt_tuning":
        return peft.PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=spec.num_virtual_tokens
        )
    if spec.method == "prefix_tuning":
        return peft.PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=spec.num_virtual_tokens
        )
    if spec.method == "p_tuning":
        return peft.PromptEncoderConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=spec.num_virtual_tokens,
            encoder_hidden_size=model.config.hidden_size,
        )
    raise ValueError(f"{spec.method} is not an adapter method")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    for module in model.modules():
        is_layers = isinstance(module, nn.ModuleList) and len(module) > 0
        if is_layers and "Layer" in type(module[0]).__name__:
            return module
    raise ValueError("cannot find the model's decoder layers")


def last_layer_indices(model: nn.Module, count: int) -> list[int] | None:
    """The indices of the last `count` decoder layers (all of them when it exceeds the depth)."""
    if count <= 0:
        return None
    depth = len(decoder_layers(model))
    return list(range(max(0, depth - count), depth))


def prepare_model(model: nn.Module, spec: JobSpec, init_dir: Path | None = None) -> nn.Module:
    """Wraps or freezes `model` for the method; PiSSA saves its initial adapter to `init_dir`."""
    if spec.method in ADAPTER_METHODS:
        import peft

        model = peft.get_peft_model(model, peft_config(spec, model))
        if spec.lora.init == "pissa" and init_dir is not None:
            # PiSSA rewrites base weights; the initial adapter lets the final save convert it
            # back into a plain LoRA that applies to the untouched base.
            model.peft_config["default"].init_lora_weights = True
            model.save_pretrained(init_dir, safe_serialization=True)
            model.peft_config["default"].init_lora_weights = "pissa"
        return model
    if spec.method == "last_layers":
        for param in model.parameters():
            param.requires_grad_(False)
        layers = decoder_layers(model)
        keep = min(spec.hyperparameters.trainable_last_layers, len(layers))
        trainable: list[nn.Module] = list(layers[len(layers) - keep :])
        trainable.append(model.get_output_embeddings())
        norm = getattr(getattr(model, "model", None), "norm", None)
        if norm is not None:
            trainable.append(norm)
        for module in trainable:
            for param in module.parameters():
                param.requires_grad_(True)
    return model


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: param.detach().clone().contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name in state if name not in params]
    if missing:
        raise ValueError(f"checkpoint does not match the model: {missing[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _name_base_model(config_path: Path, base_model: str) -> None:
    """peft records the local folder it loaded; the registry needs the model's name."""
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_model
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def save_artifact(
    model: nn.Module, tokenizer: Any, spec: JobSpec, out: Path, init_dir: Path | None = None
) -> str:
    """Saves the final weights; returns "adapter" or "model"."""
    out.mkdir(parents=True, exist_ok=True)
    if spec.method in ADAPTER_METHODS:
        kwargs: dict[str, Any] = {"safe_serialization": True}
        if spec.lora.init == "pissa" and init_dir is not None:
            kwargs["path_initial_model_for_weight_conversion"] = str(init_dir)
        model.save_pretrained(out, **kwargs)
        _name_base_model(out / "adapter_config.json", spec.base_model)
        for extra in out.iterdir():
            if extra.name not in ADAPTER_FILES and extra.is_file():
                extra.unlink()
        return "adapter"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return "model"
