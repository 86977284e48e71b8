"""Keeping non-finite numbers out of the engine, and failing the request that makes them anyway.

Two layers around vLLM (the third, zeroing KV blocks, is in the CPU plugin: see
docs/adapter-safety.md):
- before loading, an adapter's weights must be finite and of sane magnitude: the registry checks
  at push, but it may hold pushes older than that check;
- while generating, the sampled token's log-probability must be finite. vLLM computes it from the
  raw logits of that row only, so a NaN or inf anywhere in them shows up there, one step after it
  appears. The request then stops with a clear error instead of streaming garbage with status OK.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from services.common.adapter_weights import check_folder_weights
from services.common.errors import FailedPrecondition, InvalidArgument, LoraplexError

log = logging.getLogger(__name__)


def check_adapter_values(name: str, folder: Path, max_abs: float) -> None:
    """Raises FAILED_PRECONDITION if the adapter's weights are non-finite or absurdly large.

    Reads every safetensors file once through a memory map: call it off the event loop."""
    try:
        check_folder_weights(folder, max_abs)
    except InvalidArgument as exc:
        log.warning("refused adapter %s: %s", name, exc.message)
        raise FailedPrecondition(f"adapter {name} cannot be served: {exc.message}") from None


def sampled_logprobs_finite(positions: Iterable[Mapping[int, Any] | None] | None) -> bool:
    """Whether every sampled token's log-probability (vLLM `logprobs=0`) is a finite number."""
    flat = getattr(positions, "logprobs", None)  # vLLM FlatLogprobs: one list of floats
    if isinstance(flat, list):
        return all(map(math.isfinite, flat))
    for position in positions or ():
        for entry in (position or {}).values():
            if not math.isfinite(entry.logprob):
                return False
    return True


def non_finite_error(adapter_name: str | None) -> LoraplexError:
    """The error a request gets when its logits went non-finite."""
    if adapter_name:
        return FailedPrecondition(
            f"adapter {adapter_name} produced non-finite values (NaN or inf) and the generation"
            " was stopped; the adapter cannot be served as it is (retrain or re-export it)"
        )
    return LoraplexError("the model produced non-finite values and the generation was stopped")
