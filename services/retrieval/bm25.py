"""BM25 over chunk texts (bm25s), for the keyword half of hybrid search.

Product codes and rare identifiers are where dense embeddings are weakest, so
the tokenizer keeps hyphenated/dotted codes whole as well as their parts. The
index is rebuilt lazily for the revision being searched and cached until the
next write.
"""

from __future__ import annotations

import re
import threading

import bm25s
import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:[-_./][a-z0-9]+)*")
_PART = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case words; a compound like `XK-4471-B` yields itself and `xk`, `4471`, `b`."""
    tokens: list[str] = []
    for match in _WORD.finditer(text.lower()):
        word = match.group()
        tokens.append(word)
        parts = _PART.findall(word)
        if len(parts) > 1:
            tokens.extend(parts)
    return tokens


class Bm25Index:
    """An immutable BM25 index of one collection at one revision."""

    def __init__(self, revision: int, ids: np.ndarray, texts: list[str]) -> None:
        self.revision = revision
        self.ids = ids
        self._retriever = bm25s.BM25()
        self._empty = not texts
        if texts:
            self._retriever.index([tokenize(t) for t in texts], show_progress=False)
        # bm25s keeps per-query scratch state; one query at a time.
        self._lock = threading.Lock()
        #: Rough: ids, and the sparse score matrix (a score and a token id per posting).
        self._bytes = ids.nbytes + 12 * sum(len(t) // 5 + 1 for t in texts)

    def memory_bytes(self) -> int:
        return self._bytes

    def search(
        self, query: str, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, chunk ids) with a positive score, among `allowed` ids if given."""
        tokens = tokenize(query)
        if self._empty or not tokens or k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        with self._lock:
            scores = np.asarray(self._retriever.get_scores(tokens), dtype=np.float32)
        if allowed is not None:
            scores = np.where(np.isin(self.ids, allowed), scores, 0.0)
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > k:
            top = np.argpartition(-scores[candidates], k - 1)[:k]
            candidates = candidates[top]
        order = candidates[np.argsort(-scores[candidates], kind="stable")]
        return scores[order], self.ids[order]


def reciprocal_rank_fusion(rankings: list[np.ndarray], k: int = 60) -> list[tuple[int, float]]:
    """Fuses ranked id lists: score(id) = sum over lists of 1 / (k + rank), rank from 1."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking.tolist(), start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))
