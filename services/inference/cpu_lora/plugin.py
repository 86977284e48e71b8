"""vLLM general plugin: grouped multi-LoRA ops on the CPU platform.

Registered as the `loraplex_cpu_lora` entry point of the `vllm.general_plugins` group, so vLLM
calls `register()` in every engine process (possibly several times per process). On the CPU
platform it points `Platform.get_punica_wrapper` at `GroupedPunicaWrapperCPU`; everywhere else
it does nothing. It replaces vLLM internals, so it refuses to start (raises) on any vLLM version
other than the one it was written and tested against, rather than silently patch unknown code.

It also keeps `torch.compile` on when LoRA is enabled: vLLM's CPU platform turns compilation off
for any LoRA config (`CpuPlatform.check_and_update_config`), because its punica ops branch on
Python-side batch metadata that a trace-once graph would freeze. The grouped wrapper runs every
LoRA op inside the model forward as an opaque custom op (`torch.ops.loraplex.*`), so the compiled
graph only holds calls into it; the plugin therefore lets the platform configure compilation as
it would without LoRA. `LORAPLEX_CPU_LORA_COMPILE=0` keeps vLLM's eager behaviour.

And on the CPU platform, with or without the grouped ops, it makes vLLM zero every KV-cache block
before a request uses it (`kv_zeroing`): the CPU attention kernel reads slots past a request's
end, so a block left holding NaN by one request would corrupt every later one.
"""

from __future__ import annotations

import logging
import os

from services.inference.cpu_lora import kv_zeroing

logger = logging.getLogger(__name__)

SUPPORTED_VLLM_VERSION = "0.32.0"
DISABLE_ENV = "LORAPLEX_CPU_LORA"
COMPILE_ENV = "LORAPLEX_CPU_LORA_COMPILE"
WRAPPER_QUALNAME = "services.inference.cpu_lora.wrapper.GroupedPunicaWrapperCPU"


def env_off(name: str) -> bool:
    """Whether the switch `name` (default on) is set to 0/false/no/off."""
    return os.environ.get(name, "1").strip().lower() in {"0", "false", "no", "off"}


def _disabled() -> bool:
    """`LORAPLEX_CPU_LORA=0` turns the plugin off (A/B runs, bisecting a suspected bug)."""
    return env_off(DISABLE_ENV)


def check_version(installed: str) -> None:
    """Raises unless `installed` is the vLLM version the grouped ops were validated on."""
    if installed != SUPPORTED_VLLM_VERSION:
        raise RuntimeError(
            f"loraplex CPU LoRA plugin supports vLLM {SUPPORTED_VLLM_VERSION} only, found "
            f"{installed}: its punica wrapper overrides vLLM internals that may have changed. "
            f"Re-validate it (tests/integration/cpu_lora) and bump SUPPORTED_VLLM_VERSION, or "
            f"set {DISABLE_ENV}=0 to run vLLM's own CPU LoRA ops."
        )


def _grouped_punica_wrapper(cls: type) -> str:
    return WRAPPER_QUALNAME


def compile_with_lora(vllm_config: object) -> bool:
    """Whether the plugin keeps `torch.compile` on for this LoRA config.

    Only the layouts whose every in-forward LoRA call goes through the wrapper's custom ops:
    one tensor-parallel rank, no fully-sharded LoRA (that path hands the wrapper tuples of
    buffers), and not switched off with `LORAPLEX_CPU_LORA_COMPILE=0`.
    """
    lora_config = getattr(vllm_config, "lora_config", None)
    if lora_config is None or env_off(COMPILE_ENV):
        return False
    if getattr(lora_config, "fully_sharded_loras", False):
        return False
    parallel = vllm_config.parallel_config
    return parallel.tensor_parallel_size == 1 and parallel.pipeline_parallel_size == 1


def _compiling_check_and_update_config(original: object) -> classmethod:
    """`check_and_update_config` that configures compilation as if LoRA were off."""

    def check_and_update_config(cls: type, vllm_config: object) -> None:
        if not compile_with_lora(vllm_config):
            return original(cls, vllm_config)
        # The CPU hook reads `lora_config` only to force `CompilationMode.NONE`: hide it for the
        # call so compilation gets exactly the settings of a LoRA-disabled engine.
        lora_config = vllm_config.lora_config
        vllm_config.lora_config = None
        try:
            original(cls, vllm_config)
        finally:
            vllm_config.lora_config = lora_config
        logger.info("loraplex CPU LoRA plugin: torch.compile kept on with LoRA enabled")
        return None

    check_and_update_config.loraplex_original = original  # type: ignore[attr-defined]
    return classmethod(check_and_update_config)


def register() -> None:
    """Entry point: on vLLM's CPU platform, zero new KV blocks and switch to the grouped punica
    wrapper (idempotent). The zeroing is a safety fix, so `LORAPLEX_CPU_LORA=0` keeps it."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    kv_zeroing.enable()
    if _disabled():
        logger.warning(
            "loraplex CPU LoRA plugin disabled by %s: on the CPU, vLLM's own ops give base-model"
            " rows batched with adapter rows the last slot's adapter (index -1)",
            DISABLE_ENV,
        )
        return
    import vllm

    check_version(vllm.__version__)
    platform_cls = type(current_platform)
    hook = platform_cls.check_and_update_config.__func__
    if not hasattr(hook, "loraplex_original"):
        platform_cls.check_and_update_config = _compiling_check_and_update_config(hook)
    if getattr(platform_cls.get_punica_wrapper, "__func__", None) is _grouped_punica_wrapper:
        return
    platform_cls.get_punica_wrapper = classmethod(_grouped_punica_wrapper)
    logger.info("loraplex CPU LoRA plugin: grouped punica wrapper enabled")
