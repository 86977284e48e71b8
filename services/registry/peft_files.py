"""What makes a pushed folder a PEFT adapter we accept: safetensors weights and a config.

Pickle-based weights (`.bin`, `.pt`, ...) can run code when loaded, so they are
refused by name and by content, whatever their extension claims.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.adapter_weights import read_header
from services.common.errors import InvalidArgument
from services.registry.patterns import validate_pattern

CONFIG_FILE = "adapter_config.json"
ALLOWED_SUFFIXES = (".safetensors", ".json", ".md", ".txt", ".jinja")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_CONFIG_BYTES = 1024 * 1024
#: Bytes per element of each safetensors dtype.
SAFETENSORS_DTYPES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
}  # fmt: skip
#: peft ranks are small; anything past this is no LoRA an engine can serve.
MAX_CONFIG_RANK = 65_536
#: LoRA scales by alpha / r; past this the scale alone would overflow half precision.
MAX_LORA_ALPHA = 1e6
MAX_TARGET_MODULES = 1024
MAX_TARGET_MODULE_CHARS = 256


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
        """Reads a config parse_config accepted; tolerant of rows stored before its checks."""
        targets = config.get("target_modules") or ()
        is_regex = isinstance(targets, str)
        if not is_regex:
            targets = (
                tuple(sorted(t for t in targets if isinstance(t, str)))
                if isinstance(targets, list | tuple)
                else ()
            )
        return cls(
            peft_type=str(config.get("peft_type", "")).upper(),
            base_model=str(config.get("base_model_name_or_path") or ""),
            rank=_whole(config.get("r")) or 0,
            alpha=_number(config.get("lora_alpha")) or 0.0,
            target_modules=(targets,) if is_regex else targets,
            target_modules_is_regex=is_regex,
            task_type=str(config.get("task_type") or ""),
            raw=config,
        )


def _number(value: Any) -> float | None:
    """A finite JSON number as a float; None for anything else (bools, strings, inf, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _whole(value: Any) -> int | None:
    """A JSON whole number (8 or 8.0) as an int; None otherwise."""
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


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
    """Validates the header as safetensors' loader does: known dtypes, shapes that fit their
    bytes, and tensors that tile the data exactly.

    A file is recognised by its header; only when that does not parse do its first bytes
    tell a pickle or torch zip apart, for a message that helps (a valid header's length
    may well start with 0x80).
    """
    try:
        header, data_start = read_header(blob, label=path)
    except InvalidArgument:
        with blob.open("rb") as handle:
            head = handle.read(2)
        if head == b"PK" or head[:1] == b"\x80":
            raise InvalidArgument(
                f"{path!r} is a pickle/torch archive, not safetensors: refusing to store it"
            ) from None
        raise
    data_len = blob.stat().st_size - data_start
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidArgument(f"{path!r}: __metadata__ must map strings to strings")
    spans = sorted(_tensor_span(path, name, tensor, data_len) for name, tensor in header.items())
    position = 0
    for begin, end, name in spans:
        if begin != position:
            raise InvalidArgument(f"{path!r}: tensor {name!r} overlaps another or leaves a gap")
        position = end
    if position != data_len:
        raise InvalidArgument(f"{path!r}: tensor data does not match the file size")


def _tensor_span(path: str, name: str, tensor: Any, data_len: int) -> tuple[int, int, str]:
    """(begin, end, name) of one well-formed header entry."""
    if not isinstance(tensor, dict):
        raise InvalidArgument(f"{path!r}: tensor {name[:80]!r} is malformed")
    dtype, shape, offsets = tensor.get("dtype"), tensor.get("shape"), tensor.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
        raise InvalidArgument(
            f"{path!r}: tensor {name[:80]!r} has an unsupported dtype;"
            f" allowed are {', '.join(SAFETENSORS_DTYPES)}"
        )
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(_is_count(o) for o in offsets)
        and offsets[0] <= offsets[1] <= data_len
    ):
        raise InvalidArgument(f"{path!r}: tensor {name[:80]!r} has bad data_offsets")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise InvalidArgument(f"{path!r}: tensor {name[:80]!r} has a malformed shape")
    if math.prod(shape) * SAFETENSORS_DTYPES[dtype] != offsets[1] - offsets[0]:
        raise InvalidArgument(
            f"{path!r}: tensor {name[:80]!r} has a shape that does not fit its data"
        )
    return offsets[0], offsets[1], name


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_config(blob: Path) -> PeftInfo:
    """Reads adapter_config.json, refusing what peft or an engine could not load."""
    if blob.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidArgument(f"{CONFIG_FILE} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(blob.read_bytes())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidArgument(
            f"{CONFIG_FILE} is not valid JSON (or is nested too deeply)"
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise InvalidArgument(f"{CONFIG_FILE} has no 'peft_type': is this a PEFT adapter?")
    _check_targets(config.get("target_modules") or ())
    _check_rank("r", config.get("r"))
    _check_alpha("lora_alpha", config.get("lora_alpha"))
    for key, check in (("rank_pattern", _check_rank), ("alpha_pattern", _check_alpha)):
        pattern = config.get(key) or {}
        if not isinstance(pattern, dict):
            raise InvalidArgument(f"{CONFIG_FILE}: {key!r} must map module names to numbers")
        for value in pattern.values():
            check(f"values in {key}", value)
    return PeftInfo.from_config(config)


def _check_targets(targets: Any) -> None:
    if isinstance(targets, str):
        validate_pattern(targets)
        return
    if not isinstance(targets, list | tuple) or not all(isinstance(t, str) for t in targets):
        raise InvalidArgument(f"{CONFIG_FILE}: 'target_modules' must be a list or a regex")
    if len(targets) > MAX_TARGET_MODULES or any(
        not t or len(t) > MAX_TARGET_MODULE_CHARS for t in targets
    ):
        raise InvalidArgument(
            f"{CONFIG_FILE}: 'target_modules' may list at most {MAX_TARGET_MODULES} names of"
            f" 1 to {MAX_TARGET_MODULE_CHARS} characters"
        )


def _check_rank(key: str, value: Any) -> None:
    if value is None:
        return
    rank = _whole(value)
    if rank is None or not 0 <= rank <= MAX_CONFIG_RANK:
        raise InvalidArgument(
            f"{CONFIG_FILE}: {key!r} must be a whole number from 0 to {MAX_CONFIG_RANK}"
        )


def _check_alpha(key: str, value: Any) -> None:
    if value is None:
        return
    number = _number(value)
    if number is None or abs(number) > MAX_LORA_ALPHA:
        raise InvalidArgument(
            f"{CONFIG_FILE}: {key!r} must be a finite number no larger than {MAX_LORA_ALPHA:g}"
        )
