"""A NaN adapter on the real engine: refused before loading; forced in, it fails alone.

Issue 12's critical defect: one request through a NaN adapter left NaN in the KV block it
freed, the next request got that block and the CPU attention kernel multiplied the block's
unused (masked, probability 0) slots by the stale NaN. Every later answer, any tenant's, was
garbage. Here the adapter is first refused by the weight check; then the check is switched off
and the adapter loaded anyway: other requests, alone and batched with the NaN ones, must stay
token-identical (greedy) to their references, and the NaN requests must fail with a clear error.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from services.common.errors import FailedPrecondition
from services.inference import engine as engine_module
from services.inference.engine import AdapterHandle, SamplingOptions, VllmEngine
from tests.tiny_llm import make_random_lora

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

QUESTIONS = (
    "question: what is the refund window?",
    "question: who approves travel?",
    "hello world, this is loraplex speaking",
    "the quick brown fox",
)


def _nan_lora(folder: Path, base_model: Path) -> Path:
    make_random_lora(folder, base_model, rank=8, seed=3)
    weights_path = folder / "adapter_model.safetensors"
    weights = load_file(str(weights_path))
    for key in weights:
        if "lora_B" in key:
            weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, str(weights_path))
    return folder


async def _generate(engine: VllmEngine, prompt: list[int], adapter=None) -> str:
    text = []
    options = SamplingOptions(max_tokens=24)
    async for chunk in engine.generate(prompt, options, uuid.uuid4().hex, adapter):
        text.append(chunk.delta)
    return "".join(text)


async def test_nan_adapter_is_refused_and_cannot_corrupt_other_requests(
    engine, tiny_model, tmp_path, monkeypatch
):
    handle = AdapterHandle(
        "x/nan@1", engine.next_adapter_id(), _nan_lora(tmp_path / "nan", tiny_model)
    )
    with pytest.raises(FailedPrecondition, match="NaN or infinite"):
        await engine.load_adapter(handle)

    chat = [engine.render_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    prompts = chat + [engine.encode(q) for q in QUESTIONS]
    references = [await _generate(engine, p) for p in prompts]
    assert any(references), "the references must say something to compare with"

    # A registry or inference check may be missing (an old push, a bug): load it anyway.
    monkeypatch.setattr(engine_module, "check_adapter_values", lambda *args: None)
    await engine.load_adapter(handle)
    try:
        poisoned = []
        for prompt in chat:
            poisoned += await asyncio.gather(
                _generate(engine, prompt, handle), return_exceptions=True
            )
            assert [await _generate(engine, p) for p in prompts] == references

        mixed = [(p, handle) for p in chat] + [(p, None) for p in prompts]
        mixed = mixed[::2] + mixed[1::2]  # NaN requests interleaved with the others
        for _ in range(2):
            results = await asyncio.gather(
                *(_generate(engine, p, a) for p, a in mixed), return_exceptions=True
            )
            others = [r for r, (_, a) in zip(results, mixed, strict=True) if a is None]
            assert others == [references[prompts.index(p)] for p, a in mixed if a is None]
            poisoned += [r for r, (_, a) in zip(results, mixed, strict=True) if a is not None]
        assert [await _generate(engine, p) for p in prompts] == references
    finally:
        await engine.unload_adapter(handle)

    for outcome in poisoned:
        assert isinstance(outcome, FailedPrecondition), outcome
        assert "x/nan@1 produced non-finite values" in outcome.message
