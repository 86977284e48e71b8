"""Input rules more than one service (and every front end) applies, stated once.

- Names a client chooses (datasets, documents, jobs): printable text only. A NUL
  truncates the name in C code and logs, other control characters rewrite
  terminals, and a bidi control (U+202E…) makes `txt.exe` print as `exe.txt`.
- Search depth: one default and one upper limit for `top_k`, whether a search comes
  from a client or from inference's RAG.
- A score threshold is a finite number, or unset (keep every hit).
"""

from __future__ import annotations

import math
import unicodedata

from services.common.errors import InvalidArgument

#: Chunks a search returns when the request leaves `top_k` unset (0).
DEFAULT_TOP_K = 5
#: The most chunks one search may ask for.
MAX_TOP_K = 100

#: Unicode categories refused in names: controls (C0, DEL, C1), format characters
#: (bidi overrides and isolates, zero-width characters, BOM), line/paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def unprintable(text: str) -> str | None:
    """The first character a name must not hold, or None."""
    return next((c for c in text if unicodedata.category(c) in _REFUSED_CATEGORIES), None)


def check_name(value: str, what: str, max_chars: int = 255) -> str:
    """`value` if it is a usable name: 1-`max_chars` characters, none a control or
    invisible formatting character; else INVALID_ARGUMENT saying which character."""
    if not value or len(value) > max_chars:
        raise InvalidArgument(f"{what} must be 1-{max_chars} characters")
    bad = unprintable(value)
    if bad is not None:
        raise InvalidArgument(
            f"{what} {value[:60]!r} holds U+{ord(bad):04X}"
            f" ({unicodedata.name(bad, 'a control character').lower()}): use printable"
            " characters only, without control or bidirectional formatting characters"
        )
    return value


def top_k(value: int, what: str = "top_k") -> int:
    """The effective `top_k`: unset (0) is `DEFAULT_TOP_K`; refuses < 0 or > `MAX_TOP_K`."""
    if not 0 <= value <= MAX_TOP_K:
        raise InvalidArgument(
            f"{what} must be between 1 and {MAX_TOP_K} (0 or unset: {DEFAULT_TOP_K}), got {value}"
        )
    return value or DEFAULT_TOP_K


def min_score(value: float | None, what: str = "min_score") -> float | None:
    """None keeps every hit; a threshold must be a finite number (not NaN, not ±inf)."""
    if value is not None and not math.isfinite(value):
        raise InvalidArgument(f"{what} must be a finite number or unset, got {value}")
    return value
