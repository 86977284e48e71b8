"""vLLM general plugin: grouped multi-LoRA ops on the CPU platform.

Registered as the `loraplex_cpu_lora` entry point of the `vllm.general_plugins` group, so vLLM
calls `register()` in every engine process (possibly several times per process). On the CPU
platform it points `Platform.get_punica_wrapper` at `GroupedPunicaWrapperCPU`; everywhere else
it does nothing. It replaces vLLM internals, so it refuses to start (raises) on any vLLM version
other than the one it was written and tested against, rather than silently patch unknown code.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

SUPPORTED_VLLM_VERSION = "0.32.0"
DISABLE_ENV = "LORAPLEX_CPU_LORA"
WRAPPER_QUALNAME = "services.inference.cpu_lora.wrapper.GroupedPunicaWrapperCPU"


def _disabled() -> bool:
    """`LORAPLEX_CPU_LORA=0` turns the plugin off (A/B runs, bisecting a suspected bug)."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() in {"0", "false", "no", "off"}


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


def register() -> None:
    """Entry point: switch vLLM's CPU platform to the grouped punica wrapper (idempotent)."""
    if _disabled():
        logger.warning(
            "loraplex CPU LoRA plugin disabled by %s: on the CPU, vLLM's own ops give base-model"
            " rows batched with adapter rows the last slot's adapter (index -1)",
            DISABLE_ENV,
        )
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    import vllm

    check_version(vllm.__version__)
    platform_cls = type(current_platform)
    if getattr(platform_cls.get_punica_wrapper, "__func__", None) is _grouped_punica_wrapper:
        return
    platform_cls.get_punica_wrapper = classmethod(_grouped_punica_wrapper)
    logger.info("loraplex CPU LoRA plugin: grouped punica wrapper enabled")
