"""Tenant-written `target_modules` patterns: checked at push, matched so none can stall the service.

peft applies a string `target_modules` with `re.fullmatch(pattern, module_name)`, so a
pattern must compile under `re` to be of any use. But `re` backtracks and holds the GIL:
`(a|aa)+$` against a crafted module name takes exponential time and would freeze the
event loop for every tenant. So patterns are bounded in length at push, and matched with
the `regex` engine, which releases the GIL and honours a timeout, in the registry's
executor and within a time budget per request.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

import regex

from services.common.errors import FailedPrecondition, InvalidArgument

MAX_PATTERN_CHARS = 1024
#: Wall-clock seconds one compatibility check may spend matching a pattern.
MATCH_BUDGET_SECONDS = 0.5
_COMPILE_ERRORS = (re.error, regex.error, RecursionError, OverflowError, ValueError)


def validate_pattern(pattern: str) -> str:
    """Refuses, with INVALID_ARGUMENT, a pattern peft could not use or we could not bound."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidArgument(
            f"the target_modules pattern is longer than {MAX_PATTERN_CHARS} characters"
        )
    try:
        re.compile(pattern)
        regex.compile(pattern)
    except _COMPILE_ERRORS as exc:
        raise InvalidArgument(
            f"target_modules {pattern[:80]!r} is not a valid regular expression: {exc}"
        ) from None
    return pattern


def matches_any(pattern: str, names: Iterable[str], budget: float = MATCH_BUDGET_SECONDS) -> bool:
    """Whether the pattern matches within any name; blocks for about `budget` at most.

    Run it off the event loop. A stored pattern that no longer compiles (pushed before
    push-time checks) or that cannot be decided within the budget is FAILED_PRECONDITION.
    """
    try:
        compiled = regex.compile(pattern)
    except _COMPILE_ERRORS:
        raise FailedPrecondition(
            f"the adapter's target_modules {pattern[:80]!r} is not a valid regular expression;"
            " push it again with a corrected adapter_config.json"
        ) from None
    deadline = time.monotonic() + budget
    for name in names:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            if compiled.search(name, timeout=remaining) is not None:
                return True
        except TimeoutError:
            raise FailedPrecondition(
                f"the adapter's target_modules pattern {pattern[:80]!r} is too costly to match"
                " against this model's modules; push it again with a simpler pattern or a list"
            ) from None
    return False
