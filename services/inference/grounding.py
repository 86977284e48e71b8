"""The serving-time check of a RAG answer: every citation against the passage it names.

An answer is cut into claims: the text before each group of `[n]` markers is the
claim those sources are cited for; other sentences with content are uncited claims.
A cited passage that does not support its claim (`services.common.grounding.support`)
loses its marker. The answer is grounded when every claim keeps at least one
supported citation. A model's own decline ("The sources do not say.") cites nothing.

When the request asks to abstain, a claim the model left without a supported citation
is cited to the passage that supports it best, if one does; claims no passage supports
are cut out, and an answer with no supported claim left is replaced, by policy, with
the fixed decline sentence or a quote of the passage sentence closest to the question
(docs/grounding.md).
Pure functions over the answer text and the passage texts: no gRPC, no engine.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.grounding import (
    DECLINE,
    Claim,
    Passage,
    claim,
    is_refusal,
    proper_nouns,
    question_terms,
    sentences,
    support,
)

_GROUP = re.compile(r"(\s*)(\[\d{1,3}\](?:\s*\[\d{1,3}\])*)")
_MARKER = re.compile(r"\[(\d{1,3})\]")
#: In a group that backs a claim together, a passage holding one of the claim's numbers
#: or names, or this share of its content words, backs its part.
_CONTRIBUTION = 0.25
#: A quoted sentence must hold this share of the question's content words.
_QUOTE_OVERLAP = 0.5
_QUOTE_MAX_WORDS = 40


class AbstainPolicy(enum.Enum):
    """What to do when no passage supports the answer."""

    OFF = "off"  # keep the checked answer, only mark it ungrounded
    REFUSE = "refuse"  # answer with DECLINE
    QUOTE = "quote"  # quote the best passage sentence, else DECLINE


class Refusal(enum.Enum):
    NONE = "none"  # the answer is not a refusal
    MODEL_DECLINED = "model_declined"  # the model said the sources do not answer
    NOT_SUPPORTED = "not_supported"  # the service abstained: nothing supports the answer
    NO_SOURCES = "no_sources"  # the service abstained: retrieval found no passage


@dataclass(frozen=True)
class CitationCheck:
    number: int
    support: float  # best support score for the claims it was cited for (or the answer)
    supported: bool  # it backs at least one claim it is cited for
    cited: bool  # the checked text cites it
    dropped: bool  # the model cited it but the check removed the marker
    added: bool = False  # the service cited it for a claim the model left without support


@dataclass(frozen=True)
class Verdict:
    text: str
    grounded: bool
    refusal: Refusal = Refusal.NONE
    quoted: bool = False
    citations: dict[int, CitationCheck] = field(default_factory=dict)


@dataclass
class _Piece:
    """One claim of the answer and the citation group after it (if any)."""

    sentence: str
    numbers: list[int]
    space: str  # whitespace the model put before the group
    claim: Claim | None = None
    kept: list[int] = field(default_factory=list)

    @property
    def is_claim(self) -> bool:
        return self.claim is not None and not self.claim.empty


def _pieces(text: str, valid: Mapping[int, object]) -> tuple[list[_Piece], bool]:
    """Claims with the valid numbers cited after them; True when a group cites no claim."""
    pieces: list[_Piece] = []
    orphan = False
    start = 0
    for match in _GROUP.finditer(text):
        parts = sentences(text[start : match.start()])
        numbers = list(dict.fromkeys(int(n) for n in _MARKER.findall(match.group(2))))
        orphan = orphan or any(n not in valid for n in numbers)
        numbers = [n for n in numbers if n in valid]
        start = match.end()
        if not parts:  # a group at the very start cites nothing
            orphan = True
            continue
        pieces += [_Piece(s, [], "") for s in parts[:-1]]
        pieces.append(_Piece(parts[-1], numbers, match.group(1)))
    pieces += [_Piece(s, [], "") for s in sentences(text[start:])]
    return pieces, orphan


def _render(pieces: list[_Piece]) -> str:
    out = []
    for piece in pieces:
        markers = "".join(f"[{n}]" for n in piece.kept)
        out.append(f"{piece.sentence}{piece.space or ' '}{markers}" if markers else piece.sentence)
    return " ".join(out)


def _quote(question: str, passages: Mapping[int, str]) -> tuple[str, int] | None:
    wanted = claim(question).content
    if not wanted:
        return None
    best: tuple[float, int, str] | None = None
    for number, text in passages.items():
        for sentence in sentences(text):
            if sentence.startswith("#"):
                continue
            held = len(wanted & claim(sentence).content) / len(wanted)
            if best is None or held > best[0]:
                best = (held, number, sentence)
    if best is None or best[0] < _QUOTE_OVERLAP:
        return None
    words = best[2].split()
    quote = " ".join(words[:_QUOTE_MAX_WORDS]) + (" ..." if len(words) > _QUOTE_MAX_WORDS else "")
    return quote, best[1]


def check_answer(
    text: str,
    passages: Mapping[int, str],
    *,
    question: str = "",
    policy: AbstainPolicy = AbstainPolicy.OFF,
) -> Verdict:
    """Checks `text` against the numbered `passages` it was given; see the module doc."""
    declined = is_refusal(text)
    if not passages:
        if policy is AbstainPolicy.OFF or declined:
            return Verdict(text, False, Refusal.MODEL_DECLINED if declined else Refusal.NONE)
        return Verdict(DECLINE, False, Refusal.NO_SOURCES)
    indexed = {n: Passage(t) for n, t in passages.items()}
    names = proper_nouns(passages.values())
    asked = question_terms(question)
    pieces, orphan = _pieces(text, passages)
    for piece in pieces:
        piece.claim = claim(piece.sentence, names, asked)
    claims = [p for p in pieces if p.is_claim]
    model_cited = {n for p in pieces for n in p.numbers}
    scores = dict.fromkeys(passages, 0.0)
    if not declined:
        for piece in claims:
            _check_piece(piece, indexed, scores)
        for n, passage in indexed.items():
            if n not in model_cited and claims:
                scores[n] = max(support(p.claim, [passage]).score for p in claims)
    added: set[int] = set()
    if policy is not AbstainPolicy.OFF and not declined:
        added = _cite_for_the_model(claims, indexed)
    supported = {n for p in pieces for n in p.kept}
    grounded = not declined and bool(claims) and all(p.kept for p in claims)
    refusal = Refusal.MODEL_DECLINED if declined else Refusal.NONE
    changed = orphan or any(p.kept != p.numbers for p in pieces)
    if policy is not AbstainPolicy.OFF and not declined and not grounded:
        if supported:  # keep the claims the passages support, cut the rest
            pieces = [p for p in pieces if p.kept or not p.is_claim]
            grounded = changed = True
        else:
            return _abstain(policy, question, passages, scores, model_cited)
    final = _render(pieces) if changed else text
    checks = _checks(scores, supported, supported, model_cited, added)
    return Verdict(final, grounded, refusal, False, checks)


def _cite_for_the_model(claims: list[_Piece], indexed: Mapping[int, Passage]) -> set[int]:
    """A claim left without a supported citation gets the passage that best supports it."""
    added: set[int] = set()
    for piece in claims:
        if piece.kept:
            continue
        assert piece.claim is not None
        backing = [(support(piece.claim, [p]), n) for n, p in indexed.items()]
        ranked = sorted((-s.score, n) for s, n in backing if s.supported)
        if ranked:
            piece.kept = [ranked[0][1]]
            added.add(ranked[0][1])
    return added


def _check_piece(piece: _Piece, indexed: Mapping[int, Passage], scores: dict[int, float]) -> None:
    """Keeps each cited number whose passage backs the claim, alone or with its group."""
    assert piece.claim is not None
    together = support(piece.claim, [indexed[n] for n in piece.numbers]).supported
    for n in piece.numbers:
        alone = support(piece.claim, [indexed[n]])
        scores[n] = max(scores[n], alone.score)
        share = alone.overlap >= _CONTRIBUTION or piece.claim.required - alone.missing
        part = together and share and not alone.negation
        if alone.supported or part:
            piece.kept.append(n)


def _abstain(
    policy: AbstainPolicy,
    question: str,
    passages: Mapping[int, str],
    scores: Mapping[int, float],
    model_cited: set[int],
) -> Verdict:
    if policy is AbstainPolicy.QUOTE and (found := _quote(question, passages)):
        quote, number = found
        checks = _checks(scores, {number}, {number}, model_cited)
        return Verdict(f"{quote} [{number}]", True, Refusal.NONE, True, checks)
    checks = _checks(scores, set(), set(), model_cited)
    return Verdict(DECLINE, False, Refusal.NOT_SUPPORTED, False, checks)


def _checks(
    scores: Mapping[int, float],
    supported: set[int],
    cited: set[int],
    model_cited: set[int],
    added: set[int] = frozenset(),
) -> dict[int, CitationCheck]:
    return {
        n: CitationCheck(
            number=n,
            support=score,
            supported=n in supported,
            cited=n in cited,
            dropped=n in model_cited and n not in cited,
            added=n in added and n not in model_cited,
        )
        for n, score in scores.items()
    }
