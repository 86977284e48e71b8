"""Zero every KV-cache block vLLM hands to a request, on the CPU platform.

vLLM 0.32.0's CPU attention kernel (`cpu_attn_impl.hpp`) reads keys and values in tiles
aligned to its block-size alignment, past a request's last token: it masks the extra logits to
-inf, so their probabilities are 0, and then multiplies those zeros by whatever the slots hold.
Stale finite values cancel (0 * x = 0); a stale NaN or inf does not (0 * NaN = NaN). And the
block pool hands a finished request's partial blocks to the very next request (LIFO), so one
request whose values went non-finite (a NaN adapter) poisons the next request's attention,
whose own KV then turns NaN too: every later request on that block answers garbage, for every
tenant, until restart.

vLLM already zeroes new blocks when `KVCacheConfig.needs_kv_cache_zeroing` says so (Mamba
state, mixed-precision caches): the scheduler collects newly allocated block ids and the CPU
model runner zeroes them before the step (`CPUModelRunner._zero_block_ids`). This module turns
that on for every CPU engine. It costs one memset per block a request allocates (block_size
tokens of K and V for every layer), never per token; prefix-cache hits are not new blocks and
keep their contents (and those are keyed by adapter name and path, so they never cross adapters).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def _always_zero(original: property) -> property:
    def needs_kv_cache_zeroing(self: object) -> bool:
        return True

    needs_kv_cache_zeroing.loraplex_original = original  # type: ignore[attr-defined]
    needs_kv_cache_zeroing.__doc__ = (
        "loraplex: always on the CPU, whose attention kernel multiplies masked slots' stale"
        " values by 0 (NaN survives); see services/inference/cpu_lora/kv_zeroing.py"
    )
    return property(needs_kv_cache_zeroing)


def enable() -> None:
    """Makes vLLM zero newly allocated KV blocks (idempotent); raises if the seam is gone."""
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    current = KVCacheConfig.__dict__.get("needs_kv_cache_zeroing")
    if not isinstance(current, property) or not hasattr(CPUModelRunner, "_zero_block_ids"):
        raise RuntimeError(
            "loraplex: this vLLM has no KV-block zeroing seam (KVCacheConfig."
            "needs_kv_cache_zeroing, CPUModelRunner._zero_block_ids); without it a request with"
            " non-finite values can corrupt later requests' attention. Re-validate"
            " services/inference/cpu_lora/kv_zeroing.py for this vLLM version."
        )
    if hasattr(current.fget, "loraplex_original"):
        return
    KVCacheConfig.needs_kv_cache_zeroing = _always_zero(current)
    logger.info("loraplex: new KV-cache blocks are zeroed before use")
