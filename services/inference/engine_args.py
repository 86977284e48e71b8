"""vLLM engine arguments: the named settings, with any other AsyncEngineArgs field passed
through from one JSON setting, so a GPU deployment can tune what it needs
(`LORAPLEX_INFERENCE_ENGINE_ARGS='{"tensor_parallel_size": 2, "enable_prefix_caching": true}'`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from services.common.errors import FailedPrecondition
from services.inference.settings import InferenceSettings

#: Set through their own settings: the served identity is what adapters are checked against.
RESERVED = frozenset({"model", "served_model_name"})


def named_engine_args(settings: InferenceSettings) -> dict[str, Any]:
    s = settings
    return {
        "model": str(s.model_path()),
        "served_model_name": s.served_model_name or s.model_name,
        "dtype": s.dtype,
        "max_model_len": s.max_model_len,
        "max_num_seqs": s.max_num_seqs,
        "kv_cache_memory_bytes": s.kv_cache_bytes,
        "enable_lora": s.enable_lora,
        "max_lora_rank": s.max_lora_rank,
        "max_loras": s.max_loras,
        "max_cpu_loras": max(s.max_cpu_loras, s.max_loras),
        # No periodic stats log lines; with `router_metrics` the engine still records its
        # stats, into vLLM's Prometheus logger only (see VllmEngine.start).
        "disable_log_stats": True,
    }


def engine_args(settings: InferenceSettings, known_fields: Collection[str]) -> dict[str, Any]:
    """The named arguments with `settings.engine_args` merged over them; unknown or reserved
    keys stop the start-up with a message that names them."""
    extra = dict(settings.engine_args)
    unknown = sorted(set(extra) - set(known_fields))
    if unknown:
        raise FailedPrecondition(
            f"LORAPLEX_INFERENCE_ENGINE_ARGS names {', '.join(unknown)}, which vLLM's"
            " AsyncEngineArgs does not have; check the spelling against your vLLM version"
        )
    reserved = sorted(set(extra) & RESERVED)
    if reserved:
        raise FailedPrecondition(
            f"LORAPLEX_INFERENCE_ENGINE_ARGS may not set {', '.join(reserved)}: use"
            " LORAPLEX_INFERENCE_MODEL / LORAPLEX_INFERENCE_SERVED_MODEL_NAME"
        )
    return {**named_engine_args(settings), **extra}


def vllm_engine_args(settings: InferenceSettings) -> Any:
    """Builds vLLM's AsyncEngineArgs (imports vLLM)."""
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    args = engine_args(settings, {f.name for f in dataclasses.fields(AsyncEngineArgs)})
    try:
        return AsyncEngineArgs(**args)
    except (TypeError, ValueError) as exc:
        raise FailedPrecondition(f"vLLM engine arguments are invalid: {exc}") from None
