"""Token-window chunking: chunks are measured in the embedding model's own tokens.

Windows are cut on token boundaries and mapped back to character offsets, so a
chunk's text is an exact slice of its document and a client can highlight it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.common.errors import InvalidArgument


@dataclass(frozen=True)
class Chunk:
    """One window of a document: `text == document[start_char:end_char]`."""

    index: int
    text: str
    start_char: int
    end_char: int


def validate_chunking(size: int, overlap: int, max_tokens: int) -> None:
    if size < 8 or size > max_tokens:
        raise InvalidArgument(
            f"chunk_size_tokens must be between 8 and {max_tokens} for this embedding model,"
            f" got {size}"
        )
    if overlap < 0 or overlap >= size // 2 + 1:
        raise InvalidArgument(
            f"chunk_overlap_tokens must be between 0 and {size // 2} (half the chunk size),"
            f" got {overlap}"
        )


def chunk_text(
    text: str,
    offsets_of: Callable[[str], Sequence[tuple[int, int]] | np.ndarray],
    size: int,
    overlap: int,
) -> list[Chunk]:
    """Windows of `size` tokens, each starting `size - overlap` tokens after the previous."""
    return chunk_offsets(text, np.asarray(offsets_of(text), dtype=np.int64), size, overlap)


def chunk_offsets(text: str, offsets: np.ndarray, size: int, overlap: int) -> list[Chunk]:
    """`chunk_text` over token spans already computed (an n x 2 array of `[start, end)`)."""
    offsets = offsets.reshape(-1, 2)
    offsets = offsets[offsets[:, 1] > offsets[:, 0]]
    if not len(offsets):
        return []
    step = size - overlap
    chunks: list[Chunk] = []
    start = 0
    while True:
        begin = int(offsets[start, 0])
        end = int(offsets[min(start + size, len(offsets)) - 1, 1])
        chunks.append(Chunk(len(chunks), text[begin:end], begin, end))
        if start + size >= len(offsets):
            return chunks
        start += step
