"""Are an adapter's weights numbers a model can serve? Finite, and of a sane magnitude.

One NaN or inf in a LoRA matrix turns every activation it touches non-finite, and
engine state shared between requests can carry that to other tenants' answers. So
the registry checks values at push and inference checks again before loading (a
registry may hold pushes older than this check). Safetensors are read in chunks
through a memory map, so the check costs one pass over the bytes and little memory.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from services.common.errors import InvalidArgument

#: LoRA/IA3/prompt weights are O(1); anything past this is corrupt or hostile.
DEFAULT_MAX_ABS = 1e4
_CHUNK_ELEMENTS = 4 * 1024 * 1024
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_header(path: Path, label: str = "") -> tuple[dict[str, Any], int]:
    """The safetensors JSON header and the offset its tensor data starts at.

    `label` names the file in errors (a blob store's file name means nothing to a user).
    """
    label = label or path.name
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise InvalidArgument(f"{label!r} is too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(_MAX_HEADER_BYTES, path.stat().st_size - 8):
            raise InvalidArgument(f"{label!r} is not a safetensors file (bad header size)")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise InvalidArgument(f"{label!r} has an unreadable safetensors header") from None
    if not isinstance(header, dict):
        raise InvalidArgument(f"{label!r} has an unreadable safetensors header")
    return header, 8 + header_len


def _as_float(raw: np.ndarray, dtype: str) -> np.ndarray | None:
    """Raw bytes of one chunk as floats; None for dtypes that cannot be non-finite."""
    if dtype == "F32":
        return raw.view("<f4")
    if dtype == "F64":
        return raw.view("<f8")
    if dtype == "F16":
        return raw.view("<f2")
    if dtype == "BF16":  # the top half of a float32
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    if dtype == "F8_E5M2":  # the top byte of a float16
        return (raw.astype(np.uint16) << 8).view("<f2")
    if dtype == "F8_E4M3":  # e4m3fn: no inf; NaN is S.1111.111; finite values stay below 448
        return np.where((raw & 0x7F) == 0x7F, np.float32(np.nan), np.float32(0.0))
    return None


_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E5M2": 1, "F8_E4M3": 1}


def _chunks(data: np.ndarray, begin: int, end: int, item: int) -> Iterator[np.ndarray]:
    step = _CHUNK_ELEMENTS * item
    for start in range(begin, end, step):
        yield np.asarray(data[start : min(start + step, end)])


def check_weight_values(path: Path, max_abs: float = DEFAULT_MAX_ABS, label: str = "") -> None:
    """Raises INVALID_ARGUMENT naming the first tensor with NaN/inf or |value| > max_abs."""
    label = label or path.name
    header, data_start = read_header(path, label)
    size = path.stat().st_size
    if size == data_start:
        return
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start)
    for name, tensor in header.items():
        if name == "__metadata__" or not isinstance(tensor, dict):
            continue
        dtype = tensor.get("dtype")
        item = _ITEM_BYTES.get(dtype) if isinstance(dtype, str) else None
        offsets = tensor.get("data_offsets")
        if item is None or not isinstance(offsets, list) or len(offsets) != 2:
            continue
        begin, end = offsets
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            continue
        if end > len(data) or (end - begin) % item:
            raise InvalidArgument(f"{label}: tensor {name!r} has bad offsets")
        largest = 0.0
        for raw in _chunks(data, begin, end, item):
            values = _as_float(raw, dtype)
            if values is None or values.size == 0:
                continue
            if not np.isfinite(values).all():
                raise InvalidArgument(
                    f"{label}: tensor {name!r} holds NaN or infinite values; an adapter must"
                    " have finite weights (check the training run that produced it)"
                )
            largest = max(largest, float(np.abs(values).max()))
        if largest > max_abs:
            raise InvalidArgument(
                f"{label}: tensor {name!r} has weights up to {largest:.3g} in magnitude, above"
                f" the limit of {max_abs:g}; such an adapter would overflow the model"
            )


def check_folder_weights(folder: Path, max_abs: float = DEFAULT_MAX_ABS) -> None:
    """Every safetensors file under an adapter folder, as check_weight_values."""
    for path in sorted(folder.rglob("*.safetensors")):
        check_weight_values(path, max_abs, label=str(path.relative_to(folder)))
