"""File paths inside an adapter folder: nothing that could escape it.

Names, references and aliases live in services.common.adapter_ref, shared by every service.
"""

from __future__ import annotations

import re

from services.common.errors import InvalidArgument

# Matched with fullmatch: `$` would also accept a trailing newline.
_FILE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def validate_file_path(path: str) -> str:
    """Relative paths inside an adapter folder; nothing that could escape it."""
    parts = path.split("/")
    if (
        not path
        or len(path) > 255
        or "\\" in path
        or len(parts) > 3
        or not all(_FILE_PART.fullmatch(part) for part in parts)
    ):
        raise InvalidArgument(
            f"file path {path[:80]!r} is invalid: use a relative path of letters, digits,"
            " '.', '_' or '-' (no '..', no absolute paths)"
        )
    return path
