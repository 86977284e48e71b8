"""Token chunking with exact offsets; BM25 tokenization and reciprocal rank fusion."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.errors import InvalidArgument
from services.retrieval.bm25 import Bm25Index, reciprocal_rank_fusion, tokenize
from services.retrieval.chunking import chunk_text, validate_chunking

TEXT = (
    "Tokenizers split words into pieces: «unbelievably» becomes several word-pieces. "
    "Offsets must map every chunk back to the exact characters of the original text, "
    "including accents like café and numbers like 3.14159."
) * 3


def test_chunks_are_exact_slices_with_the_requested_token_overlap(embedder):
    tokens = embedder.token_offsets(TEXT)
    chunks = chunk_text(TEXT, embedder.token_offsets, size=20, overlap=5)
    assert len(chunks) == -(-(len(tokens) - 5) // 15)  # ceil((n - overlap) / step)
    for i, chunk in enumerate(chunks):
        assert chunk.index == i and TEXT[chunk.start_char : chunk.end_char] == chunk.text
        assert len(embedder.token_offsets(chunk.text)) <= 20 + 2  # re-tokenizing may differ a bit
    # Consecutive chunks share exactly the 5 overlapping tokens' characters.
    assert chunks[1].start_char == tokens[15][0] and chunks[0].end_char == tokens[19][1]
    assert chunks[-1].end_char == tokens[-1][1]


def test_short_and_blank_texts():
    def offsets(text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]

    assert chunk_text("   ", offsets, 8, 2) == []
    (only,) = chunk_text("  ab c ", offsets, 8, 2)
    assert (only.text, only.start_char, only.end_char) == ("ab c", 2, 6)


@pytest.mark.parametrize(("size", "overlap"), [(4, 0), (300, 10), (64, 33), (64, -1)])
def test_chunking_settings_are_validated(size, overlap):
    with pytest.raises(InvalidArgument):
        validate_chunking(size, overlap, max_tokens=254)


def test_tokenize_keeps_codes_whole_and_in_parts():
    assert tokenize("Order XK-4471-B now") == ["order", "xk-4471-b", "xk", "4471", "b", "now"]


def test_bm25_ranks_exact_code_first_and_respects_allowed_ids():
    texts = ["part XK-4471-B bolt", "part XK-4417-B bolt", "part QZ-1000-A nut", "nothing here"]
    index = Bm25Index(7, np.array([10, 11, 12, 13]), texts)
    scores, ids = index.search("XK-4471-B", k=3)
    assert ids[0] == 10 and len(ids) == 2 and scores[0] > scores[1] > 0
    _, ids = index.search("XK-4471-B", k=3, allowed=np.array([11, 12]))
    assert ids.tolist() == [11]
    assert index.search("unrelated", k=3)[1].tolist() == []
    assert Bm25Index(0, np.zeros(0, np.int64), []).search("x", 3)[1].tolist() == []


def test_reciprocal_rank_fusion_rewards_agreement():
    fused = reciprocal_rank_fusion([np.array([1, 2, 3]), np.array([3, 4, 1])], k=60)
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)
