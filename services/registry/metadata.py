"""Bounds on what a push may attach to a version: lineage, metrics, description.

Every list and get returns these with the version, so one tenant's 7 MiB lineage would
make its listings larger than a gRPC message may be. They are bounded at write time,
per entry and in total, with a message saying which limit was hit.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping

from services.common.errors import InvalidArgument

MAX_KEY_CHARS = 128
MAX_VALUE_BYTES = 16 * 1024
MAX_DESCRIPTION_CHARS = 2048
DEFAULT_MAX_TOTAL_BYTES = 64 * 1024


def check_metadata(
    lineage: Mapping[str, str],
    metrics: Mapping[str, float],
    description: str,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
) -> None:
    """Raises INVALID_ARGUMENT naming the first entry or total past its limit."""
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument(f"description is longer than {MAX_DESCRIPTION_CHARS} characters")
    total = len(description.encode())
    for key, value in lineage.items():
        _check_key("lineage", key)
        size = len(value.encode())
        if size > MAX_VALUE_BYTES:
            raise InvalidArgument(
                f"lineage value for {key!r} is {size} bytes; the limit is {MAX_VALUE_BYTES}"
                " (store large records elsewhere and put their address or hash here)"
            )
        total += len(key.encode()) + size
    for key, value in metrics.items():
        _check_key("metric", key)
        if not math.isfinite(value):
            raise InvalidArgument(f"metric {key!r} is {value}; metrics must be finite numbers")
        total += len(key.encode()) + 8
    if total > max_total_bytes:
        raise InvalidArgument(
            f"lineage, metrics and description take {total} bytes together; the limit is"
            f" {max_total_bytes // 1024} KiB"
        )


def _check_key(kind: str, key: str) -> None:
    if not key or len(key) > MAX_KEY_CHARS or any(unicodedata.category(c)[0] == "C" for c in key):
        raise InvalidArgument(
            f"{kind} key {key[:80]!r} is invalid: use 1 to {MAX_KEY_CHARS} printable characters"
        )
