"""What makes a pushed folder a PEFT adapter we accept: safetensors weights and a config.

Pickle-based weights (`.bin`, `.pt`, ...) can run code when loaded, so they are
refused by name and by content, whatever their extension claims.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.errors import InvalidArgument

CONFIG_FILE = "adapter_config.json"
ALLOWED_SUFFIXES = (".safetensors", ".json", ".md", ".txt", ".jinja")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_CONFIG_BYTES = 1024 * 1024
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
SAFETENSORS_DTYPES = {
    "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
    "I32", "U32", "F32", "F64", "I64", "U64",
}  # fmt: skip


@dataclass(frozen=True)
class PeftInfo:
    peft_type: str
    base_model: str
    rank: int = 0
    alpha: float = 0.0
    target_modules: tuple[str, ...] = ()
    target_modules_is_regex: bool = False
    task_type: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PeftInfo:
        """Reads an already-validated adapter_config.json."""
        targets = config.get("target_modules") or ()
        is_regex = isinstance(targets, str)
        return cls(
            peft_type=str(config.get("peft_type", "")).upper(),
            base_model=str(config.get("base_model_name_or_path") or ""),
            rank=int(config.get("r") or 0),
            alpha=float(config.get("lora_alpha") or 0),
            target_modules=(targets,) if is_regex else tuple(sorted(targets)),
            target_modules_is_regex=is_regex,
            task_type=str(config.get("task_type") or ""),
            raw=config,
        )


def check_file_names(paths: list[str]) -> None:
    """Refuses pickle weights and unknown file kinds before any byte is stored."""
    for path in paths:
        lower = path.lower()
        if lower.endswith(PICKLE_SUFFIXES):
            raise InvalidArgument(
                f"{path!r} is a pickle checkpoint: only safetensors weights are accepted"
                " (save with safe_serialization=True)"
            )
        if not lower.endswith(ALLOWED_SUFFIXES):
            raise InvalidArgument(
                f"{path!r} has an unsupported type: allowed are {', '.join(ALLOWED_SUFFIXES)}"
            )
    if CONFIG_FILE not in paths:
        raise InvalidArgument(f"an adapter needs {CONFIG_FILE} at the top of the folder")
    if not any(p.endswith(".safetensors") for p in paths):
        raise InvalidArgument("an adapter needs its weights as a .safetensors file")


def check_safetensors(path: str, blob: Path) -> None:
    """Validates the header and that the tensors exactly fill the file."""
    size = blob.stat().st_size
    with blob.open("rb") as handle:
        head = handle.read(8)
        if head[:2] == b"PK" or head[:1] == b"\x80":
            raise InvalidArgument(
                f"{path!r} is a pickle/torch archive, not safetensors: refusing to store it"
            )
        if len(head) < 8:
            raise InvalidArgument(f"{path!r} is too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(MAX_SAFETENSORS_HEADER, size - 8):
            raise InvalidArgument(f"{path!r} is not a valid safetensors file (bad header size)")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, ValueError):
            raise InvalidArgument(f"{path!r} has an unreadable safetensors header") from None
    if not isinstance(header, dict):
        raise InvalidArgument(f"{path!r} has an unreadable safetensors header")
    data_len = size - 8 - header_len
    end = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, begin, stop = tensor["dtype"], *tensor["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise InvalidArgument(f"{path!r}: tensor {name!r} is malformed") from None
        if dtype not in SAFETENSORS_DTYPES or not 0 <= begin <= stop <= data_len:
            raise InvalidArgument(f"{path!r}: tensor {name!r} has a bad dtype or offsets")
        end = max(end, stop)
    if end != data_len:
        raise InvalidArgument(f"{path!r}: tensor data does not match the file size")


def parse_config(blob: Path) -> PeftInfo:
    if blob.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidArgument(f"{CONFIG_FILE} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(blob.read_bytes())
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument(f"{CONFIG_FILE} is not valid JSON") from None
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise InvalidArgument(f"{CONFIG_FILE} has no 'peft_type': is this a PEFT adapter?")
    targets = config.get("target_modules") or ()
    if not isinstance(targets, str | list | tuple) or not all(
        isinstance(t, str) for t in ([targets] if isinstance(targets, str) else targets)
    ):
        raise InvalidArgument(f"{CONFIG_FILE}: 'target_modules' must be a list or a regex")
    try:
        rank = int(config.get("r") or 0)
        float(config.get("lora_alpha") or 0)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{CONFIG_FILE}: 'r' and 'lora_alpha' must be numbers") from None
    if rank < 0:
        raise InvalidArgument(f"{CONFIG_FILE}: rank must not be negative")
    return PeftInfo.from_config(config)
