"""VllmEngine's seams that need no model: engine arguments, adapter load errors."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from services.common.errors import FailedPrecondition
from services.inference import engine as engine_module
from services.inference.engine import AdapterHandle, VllmEngine
from services.inference.engine_args import engine_args
from services.inference.settings import InferenceSettings
from tests.integration.registry.adapters import make_lora_adapter

vllm_arg_utils = pytest.importorskip("vllm.engine.arg_utils")
FIELDS = {f.name for f in dataclasses.fields(vllm_arg_utils.AsyncEngineArgs)}


def test_engine_args_json_merges_over_named_settings(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "LORAPLEX_INFERENCE_ENGINE_ARGS",
        '{"tensor_parallel_size": 2, "enable_prefix_caching": true, "max_num_seqs": 7}',
    )
    settings = InferenceSettings(data_dir=tmp_path, max_num_seqs=32, max_model_len=1024)
    args = engine_args(settings, FIELDS)
    assert args["tensor_parallel_size"] == 2 and args["enable_prefix_caching"] is True
    assert args["max_num_seqs"] == 7  # the JSON wins over the named setting
    assert args["max_model_len"] == 1024  # named settings stay
    built = vllm_arg_utils.AsyncEngineArgs(**args)
    assert built.tensor_parallel_size == 2


def test_unknown_or_reserved_engine_args_stop_start_up(tmp_path):
    settings = InferenceSettings(data_dir=tmp_path, engine_args={"tensor_paralel_size": 2})
    with pytest.raises(FailedPrecondition, match=r"tensor_paralel_size.*AsyncEngineArgs"):
        engine_args(settings, FIELDS)
    settings = InferenceSettings(data_dir=tmp_path, engine_args={"model": "/elsewhere"})
    with pytest.raises(FailedPrecondition, match="LORAPLEX_INFERENCE_MODEL"):
        engine_args(settings, FIELDS)


class _RefusingLLM:
    async def add_lora(self, request):
        raise RuntimeError(f"cannot read /srv/secret/cache/{request.lora_name}/weights")


async def test_refused_load_sends_a_clean_message(tmp_path, monkeypatch):
    """Defect 7: vLLM's exception text (local paths) reached clients; shape check off the loop."""
    folder = make_lora_adapter(tmp_path / "a", hidden=64)
    engine = VllmEngine(InferenceSettings(data_dir=tmp_path))
    engine._llm = _RefusingLLM()
    engine.linear_shapes = {
        f"model.layers.{n}.self_attn.{t}": (64, 64) for n in range(2) for t in ("q_proj", "v_proj")
    }
    threads: list[str] = []
    check = engine_module.check_lora_shapes

    def checking(*args):
        threads.append(threading.current_thread().name)
        return check(*args)

    monkeypatch.setattr(engine_module, "check_lora_shapes", checking)
    with pytest.raises(FailedPrecondition) as caught:
        await engine.load_adapter(AdapterHandle("acme/bot@1", 1, folder))
    assert "acme/bot@1" in caught.value.message
    assert "/srv" not in caught.value.message and str(tmp_path) not in caught.value.message
    assert threads and threading.main_thread().name not in threads
