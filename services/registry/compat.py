"""Can a serving engine load this adapter? Every reason it cannot, in words."""

from __future__ import annotations

from collections.abc import Iterable

from services.registry.patterns import matches_any
from services.registry.peft_files import PeftInfo


def same_base_model(adapter_base: str, served: str) -> bool:
    """Equal names, or equal last path components (a local copy of the same hub model)."""
    a, b = adapter_base.strip().rstrip("/"), served.strip().rstrip("/")
    if not a or not b:
        return False
    return a == b or a.rsplit("/", 1)[-1].lower() == b.rsplit("/", 1)[-1].lower()


def incompatibilities(
    peft: PeftInfo,
    base_model: str = "",
    max_rank: int = 0,
    available_modules: Iterable[str] = (),
    supported_peft_types: Iterable[str] = (),
) -> list[str]:
    """Why an engine cannot serve the adapter; empty when it can.

    Matching a regex `target_modules` may take up to the pattern budget: call this off the
    event loop when `available_modules` is given.
    """
    reasons: list[str] = []
    supported = {t.upper() for t in supported_peft_types}
    if supported and peft.peft_type not in supported:
        served = ", ".join(sorted(supported))
        reasons.append(f"adapter type {peft.peft_type} is not served here (served: {served})")
    if base_model and not same_base_model(peft.base_model, base_model):
        reasons.append(
            f"adapter was trained on base model {peft.base_model or '(unrecorded)'!r},"
            f" not {base_model!r}"
        )
    if max_rank and peft.rank > max_rank:
        reasons.append(f"adapter rank {peft.rank} exceeds the maximum rank {max_rank}")
    modules = set(available_modules)
    if modules and peft.target_modules:
        if peft.target_modules_is_regex:
            if not matches_any(peft.target_modules[0], sorted(modules)):
                reasons.append(f"target module pattern {peft.target_modules[0]!r} matches none")
        else:
            missing = sorted(set(peft.target_modules) - modules)
            if missing:
                reasons.append(f"target modules missing from the base model: {', '.join(missing)}")
    return reasons
