"""Grounding helpers: whole chunks within budget, citation markers checked while streaming."""

from __future__ import annotations

from services.inference.rag import CitationFilter, select_sources
from services.inference.records import RetrievedChunk


def chunk(text: str) -> RetrievedChunk:
    return RetrievedChunk(document_id=text[:3], text=text)


def test_select_sources_keeps_whole_chunks_within_budget():
    chunks = [chunk("a" * 50), chunk("b" * 500), chunk("c" * 20)]
    chosen = select_sources(chunks, len, budget=120)
    assert [s.chunk.text[0] for s in chosen] == ["a", "c"]
    assert [s.number for s in chosen] == [1, 2]
    assert select_sources(chunks, len, budget=5) == []


def test_citation_filter_drops_invented_numbers_across_deltas():
    stream = CitationFilter(source_count=2)
    pieces = ["Managers approve [", "1] and [", "7", "] travel [2", "][x] done [3"]
    out = "".join(stream.feed(p) for p in pieces) + stream.flush()
    assert out == "Managers approve [1] and  travel [2][x] done [3"
