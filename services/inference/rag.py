"""Grounding: numbered sources in the prompt within a token budget, citations out.

Chunks are added best-first and whole, never cut mid-chunk; the answer's `[n]`
markers are checked against the sources actually given, and invented numbers are
removed rather than passed on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.common import grounding
from services.inference.records import RetrievedChunk

_MARKER = re.compile(r"\[(\d{1,3})\]")


@dataclass(frozen=True)
class Source:
    number: int
    chunk: RetrievedChunk


def select_sources(
    chunks: Sequence[RetrievedChunk], count_tokens: Callable[[str], int], budget: int
) -> list[Source]:
    """Best-first whole chunks while they fit the token budget."""
    chosen: list[Source] = []
    used = 0
    for chunk in chunks:
        cost = count_tokens(format_source(len(chosen) + 1, chunk))
        if used + cost > budget:
            continue  # a smaller, lower-ranked chunk may still fit
        chosen.append(Source(len(chosen) + 1, chunk))
        used += cost
    return chosen


def _title(chunk: RetrievedChunk) -> str:
    return chunk.source_title or chunk.document_id


def format_source(number: int, chunk: RetrievedChunk) -> str:
    return grounding.format_source(number, _title(chunk), chunk.text)


def context_block(sources: Sequence[Source]) -> str:
    """The prompt's grounding block; sources are numbered 1..n in order (`select_sources`)."""
    return grounding.context_block([(_title(s.chunk), s.chunk.text) for s in sources])


class CitationFilter:
    """Streams text through, holding back a possible `[n]` until it is known to be valid."""

    def __init__(self, source_count: int) -> None:
        self.source_count = source_count
        self._pending = ""

    def feed(self, delta: str) -> str:
        text = self._pending + delta
        self._pending = ""
        out = []
        i = 0
        while i < len(text):
            if text[i] != "[":
                out.append(text[i])
                i += 1
                continue
            match = _MARKER.match(text, i)
            if match:
                if 1 <= int(match.group(1)) <= self.source_count:
                    out.append(match.group(0))
                i = match.end()
                continue
            tail = text[i:]
            if re.fullmatch(r"\[\d{0,3}", tail):  # might still become a marker
                self._pending = tail
                break
            out.append("[")
            i += 1
        return "".join(out)

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return text
