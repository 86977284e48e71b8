"""JSONL datasets: validated row by row before anything trains, then split and mixed.

Validation reports the first bad line by number so a user can fix the file; the
split and the mix are seeded so a resumed job sees exactly the same rows.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import InvalidArgument
from services.training.grounded_rows import record_from_row

FORMATS = ("prompt_completion", "messages", "text", "grounded_qa")
ROLES = ("system", "user", "assistant")
TASK_FORMATS = {
    "instruction": ("prompt_completion", "messages", "grounded_qa"),
    "continued_pretraining": ("text",),
}


@dataclass(frozen=True)
class DatasetSummary:
    format: str
    rows: int
    size_bytes: int
    sha256: str


def detect_format(row: dict[str, Any]) -> str:
    if "messages" in row:
        return "messages"
    if "question" in row:
        return "grounded_qa"
    if "prompt" in row or "completion" in row:
        return "prompt_completion"
    if "text" in row:
        return "text"
    raise InvalidArgument(
        "line 1: cannot tell the format: rows need 'prompt'+'completion', 'messages', 'text'"
        " or 'question'+'answer'+'passages'"
    )


def _nonempty_str(row: dict[str, Any], key: str, line: int) -> None:
    value = row.get(key)
    if not isinstance(value, str):
        raise InvalidArgument(f"line {line}: '{key}' must be a string")
    if not value.strip():
        raise InvalidArgument(f"line {line}: '{key}' is empty")


def check_row(row: Any, fmt: str, line: int) -> None:
    """Raises INVALID_ARGUMENT naming the line when `row` does not fit `fmt`."""
    if not isinstance(row, dict):
        raise InvalidArgument(f"line {line}: each row must be a JSON object")
    if fmt == "prompt_completion":
        _nonempty_str(row, "prompt", line)
        _nonempty_str(row, "completion", line)
    elif fmt == "text":
        _nonempty_str(row, "text", line)
    elif fmt == "grounded_qa":
        record_from_row(row, line)
    else:
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidArgument(f"line {line}: 'messages' must be a non-empty list")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise InvalidArgument(
                    f"line {line}: message {i} needs a role among {', '.join(ROLES)}"
                )
            if not isinstance(message.get("content"), str) or not message["content"].strip():
                raise InvalidArgument(f"line {line}: message {i} has empty content")
        if messages[-1]["role"] != "assistant":
            raise InvalidArgument(f"line {line}: the last message must be the assistant's answer")


def validate_jsonl(path: Path, fmt: str = "", max_row_bytes: int = 256 * 1024) -> DatasetSummary:
    """Checks every line of a JSONL file (UTF-8, JSON, schema, size) and hashes it."""
    digest = hashlib.sha256()
    rows = 0
    size = 0
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            digest.update(raw)
            size += len(raw)
            body = raw.rstrip(b"\r\n")
            if len(body) > max_row_bytes:
                raise InvalidArgument(
                    f"line {line_no}: row is {len(body)} bytes, over the {max_row_bytes}-byte limit"
                )
            if not body.strip():
                raise InvalidArgument(f"line {line_no}: empty row; remove blank lines")
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidArgument(
                    f"line {line_no}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8"
                ) from None
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"line {line_no}: invalid JSON: {exc.msg}") from None
            except RecursionError:
                raise InvalidArgument(
                    f"line {line_no}: JSON nested too deeply; rows are flat objects such as"
                    ' {"prompt": ..., "completion": ...}'
                ) from None
            if not fmt:
                fmt = detect_format(row) if isinstance(row, dict) else "text"
            check_row(row, fmt, line_no)
            rows += 1
    if rows == 0:
        raise InvalidArgument("the dataset is empty: upload at least one JSONL row")
    return DatasetSummary(fmt, rows, size, digest.hexdigest())


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def split_rows(
    rows: list[dict[str, Any]], validation_ratio: float, test_ratio: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeded shuffle then cut; each asked-for split keeps at least one row."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    shuffled = [rows[i] for i in order]
    n = len(shuffled)
    n_val = max(1, round(n * validation_ratio)) if validation_ratio > 0 else 0
    n_test = max(1, round(n * test_ratio)) if test_ratio > 0 else 0
    if n - n_val - n_test < 1:
        raise InvalidArgument(
            f"the dataset has {n} rows: too few to hold out validation and test rows;"
            " upload more rows or separate validation/test datasets"
        )
    return shuffled[n_val + n_test :], shuffled[:n_val], shuffled[n_val : n_val + n_test]


def mix(parts: Iterable[tuple[list[dict[str, Any]], float]], seed: int) -> list[dict[str, Any]]:
    """Multi-task mix: each dataset gets a share of the total rows equal to its weight.

    A dataset smaller than its share is repeated (sampled with replacement beyond one full
    pass); a larger one is subsampled. The result is shuffled.
    """
    parts = [(rows, weight) for rows, weight in parts if rows]
    rng = random.Random(seed)
    if len(parts) == 1:
        rows = list(parts[0][0])
        rng.shuffle(rows)
        return rows
    total = sum(len(rows) for rows, _ in parts)
    weight_sum = sum(weight for _, weight in parts)
    mixed: list[dict[str, Any]] = []
    for rows, weight in parts:
        target = max(1, round(total * weight / weight_sum))
        full, rest = divmod(target, len(rows))
        mixed.extend(rows * full)
        mixed.extend(rng.sample(rows, rest))
    rng.shuffle(mixed)
    return mixed


def iter_chunks(path: Path, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            yield chunk
