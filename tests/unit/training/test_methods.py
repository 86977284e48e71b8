"""The trainer in-process on the tiny model: every method, packing, pretraining, mixes."""

from __future__ import annotations

import json

import pytest
import torch

from services.training.batching import encode, packed_batch, padded_batch
from services.training.spec import DatasetInput, JobSpec, with_defaults
from services.training.trainer import Splits, Trainer
from tests.unit.training.tiny_model import toy_rows, toy_text_rows

METHODS = ["lora", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning", "full", "last_layers"]


def _run(tmp_path, models_dir, method: str, task: str = "instruction", rows=None, **hp):
    spec = with_defaults(
        JobSpec(base_model="tiny", train=[DatasetInput("d")], method=method, task=task)
    )
    spec.hyperparameters.max_steps = hp.pop("max_steps", 3)
    spec.hyperparameters.batch_size = 4
    for key, value in hp.items():
        setattr(spec.hyperparameters, key, value)
    rows = rows or toy_rows(2)
    events: list[tuple[str, dict]] = []
    job_dir = tmp_path / method
    job_dir.mkdir()
    trainer = Trainer(spec, models_dir / "tiny", job_dir, lambda k, **p: events.append((k, p)))
    result = trainer.run(Splits(rows[:-4], rows[-4:-2], rows[-2:]))
    return result, events, job_dir / "artifact"


@pytest.mark.parametrize("method", METHODS)
def test_every_method_saves_a_loadable_artifact(tmp_path, models_dir, method):
    from transformers import AutoModelForCausalLM

    result, events, artifact = _run(tmp_path, models_dir, method)
    assert [k for k, _ in events].count("step") == 3
    assert "test_exact_match" in result["metrics"]
    if result["artifact_kind"] == "adapter":
        from peft import PeftModel

        assert sorted(p.name for p in artifact.iterdir()) == [
            "adapter_config.json",
            "adapter_model.safetensors",
        ]
        base = AutoModelForCausalLM.from_pretrained(models_dir / "tiny")
        model = PeftModel.from_pretrained(base, artifact)
    else:
        assert method in ("full", "last_layers")
        model = AutoModelForCausalLM.from_pretrained(artifact)
    logits = model(input_ids=torch.tensor([[4, 5, 6]])).logits
    assert logits.shape[0] == 1 and logits.shape[1] >= 3 and torch.isfinite(logits).all()


def test_pissa_adapter_is_converted_to_plain_lora(tmp_path, models_dir):
    spec_rows = toy_rows(2)
    spec = with_defaults(JobSpec(base_model="tiny", train=[DatasetInput("d")]))
    spec.lora.init = "pissa"
    spec.hyperparameters.max_steps = 2
    job_dir = tmp_path / "pissa"
    job_dir.mkdir()
    Trainer(spec, models_dir / "tiny", job_dir, lambda k, **p: None).run(Splits(spec_rows))
    config = json.loads((job_dir / "artifact" / "adapter_config.json").read_text())
    assert config["r"] == 2 * spec.lora.rank  # peft's PiSSA -> LoRA conversion doubles the rank


def test_lora_last_layers_adapts_only_the_last_decoder_layers(tmp_path, models_dir):
    """The saved adapter holds weights for the last layer only, and it still trains."""
    from safetensors import safe_open

    spec = with_defaults(JobSpec(base_model="tiny", train=[DatasetInput("d")]))
    spec.lora.last_layers = 1  # the tiny model has two decoder layers
    spec.hyperparameters.max_steps = 2
    job_dir = tmp_path / "last"
    job_dir.mkdir()
    events: list[tuple[str, dict]] = []
    Trainer(spec, models_dir / "tiny", job_dir, lambda k, **p: events.append((k, p))).run(
        Splits(toy_rows(2))
    )
    artifact = job_dir / "artifact"
    assert json.loads((artifact / "adapter_config.json").read_text())["layers_to_transform"] == [1]
    with safe_open(artifact / "adapter_model.safetensors", "pt") as weights:
        names = list(weights.keys())
    assert names and all(".layers.1." in name for name in names)
    assert all(p["loss"] == p["loss"] for k, p in events if k == "step")  # finite, not NaN


def test_continued_pretraining_and_multi_task_rows_train(tmp_path, models_dir):
    result, events, _ = _run(
        tmp_path,
        models_dir,
        "lora",
        "continued_pretraining",
        rows=toy_text_rows(16),
        max_steps=20,
        learning_rate=1e-2,
    )
    losses = [p["loss"] for k, p in events if k == "step"]
    assert sum(losses[-3:]) / 3 < losses[0]
    assert "test_exact_match" not in result["metrics"]
    assert result["metrics"]["test_perplexity"] > 1


def test_packed_batch_has_no_padding_and_the_same_loss_as_padding(models_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models_dir / "tiny")
    model = AutoModelForCausalLM.from_pretrained(models_dir / "tiny").eval()
    rows = [*toy_rows(1)[:3], {"prompt": "what color is the plum ? the plum", "completion": "red"}]
    examples = encode(tokenizer, rows, "instruction", 64)
    packed = packed_batch(examples)
    padded = padded_batch(examples, tokenizer.pad_token_id)
    assert packed["input_ids"].numel() == sum(len(e.input_ids) for e in examples)
    assert padded["input_ids"].numel() > packed["input_ids"].numel()
    with torch.no_grad():
        packed_loss = float(model(**packed, use_cache=False).loss)
        assert packed_loss == pytest.approx(float(model(**padded).loss), rel=1e-4)
    # Only answer tokens carry labels.
    first = examples[0]
    answer = [t for t, label in zip(first.input_ids, first.labels, strict=True) if label != -100]
    assert answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answer, skip_special_tokens=True).strip() == "red"
