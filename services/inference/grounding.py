"""The serving-time check of a RAG answer: every citation against the passage it names.

An answer is cut into claims: the text before each group of `[n]` markers is the
claim those sources are cited for; other sentences with content are uncited claims.
A cited passage that does not support its claim (`services.common.grounding.support`),
alone or together with the other passages of its group, loses its marker. Each claim
that keeps a citation is then scored for relevance (`services.inference.relevance`):
do the sentences its facts come from answer the question. The answer's score is the
calibrated least relevance of its claims (0 when one keeps no citation, or for a
decline), and the answer is grounded when the score reaches the threshold.

When the request asks to abstain, a claim the model left without a supported citation
is cited to the passage that supports it best, if one does; claims no passage supports
are cut out, and an answer that still scores below the threshold is replaced, by
policy, with the fixed decline sentence or a quote of the most relevant passage
sentence, when that sentence reaches the threshold (docs/grounding.md). The checked
answer before any replacement, and its score, are kept beside the result, so the
policies can be compared on one generation.
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
from services.inference.relevance import (
    DEFAULT_ABSTAIN_THRESHOLD,
    DEFAULT_THRESHOLD,
    Relevance,
    Similarity,
    calibrate,
)

_GROUP = re.compile(r"(\s*)(\[\d{1,3}\](?:\s*\[\d{1,3}\])*)")
_MARKER = re.compile(r"\[(\d{1,3})\]")
_WORD = re.compile(r"\w")
#: In a group that backs a claim together, a passage holding one of the claim's numbers
#: or names, or this share of its content words, backs its part.
_CONTRIBUTION = 0.25
_QUOTE_MAX_WORDS = 40
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:!?)])")


class AbstainPolicy(enum.Enum):
    """What to do when no passage supports the answer."""

    OFF = "off"  # keep the checked answer, only mark it ungrounded
    REFUSE = "refuse"  # answer with DECLINE
    QUOTE = "quote"  # quote the most relevant passage sentence if it scores enough, else DECLINE


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
    grounded: bool  # score >= threshold
    refusal: Refusal = Refusal.NONE
    quoted: bool = False
    citations: dict[int, CitationCheck] = field(default_factory=dict)
    score: float = 0.0  # calibrated: support and relevance of `text`
    raw: float = 0.0  # the least claim relevance of `text`, before calibration
    threshold: float = DEFAULT_THRESHOLD
    checked_text: str = ""  # the model's checked answer, as policy OFF returns it
    checked_score: float = 0.0  # its score


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
        if parts and pieces and not _WORD.search(parts[0]) and len(parts) == 1:
            # "... listed on [2]. [3]": the group after the full stop cites the same claim
            last = pieces[-1]
            last.sentence += parts[0]
            last.numbers += [n for n in numbers if n not in last.numbers]
            continue
        if not parts:  # a group at the very start cites nothing
            orphan = True
            continue
        pieces += [_Piece(s, [], "") for s in parts[:-1]]
        pieces.append(_Piece(parts[-1], numbers, match.group(1)))
    pieces += [_Piece(s, [], "") for s in sentences(text[start:])]
    return pieces, orphan


def _render(pieces: list[_Piece]) -> str:
    """The pieces joined again; where a removed marker sat before punctuation, no gap."""
    out = []
    for piece in pieces:
        markers = "".join(f"[{n}]" for n in piece.kept)
        out.append(f"{piece.sentence}{piece.space or ' '}{markers}" if markers else piece.sentence)
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(out))


def _raw_score(claims: list[_Piece], relevance: Relevance) -> float:
    """The answer's relevance (`Relevance.of_answer`); 0 when a claim keeps no citation."""
    if any(not p.kept for p in claims):
        return 0.0
    return relevance.of_answer([(p.claim, p.kept) for p in claims if p.claim is not None])


def check_answer(
    text: str,
    passages: Mapping[int, str],
    *,
    question: str = "",
    policy: AbstainPolicy = AbstainPolicy.OFF,
    threshold: float = DEFAULT_THRESHOLD,
    abstain_below: float = DEFAULT_ABSTAIN_THRESHOLD,
    similarity: Similarity | None = None,
) -> Verdict:
    """Checks `text` against the numbered `passages` it was given; see the module doc.

    `threshold` is the score to flag grounded; under REFUSE and QUOTE an answer scoring
    below `abstain_below` is not served. `similarity` (the retrieval embedder's cosines)
    joins the lexical relevance.
    """
    declined = is_refusal(text)
    refusal = Refusal.MODEL_DECLINED if declined else Refusal.NONE
    if not passages:
        if policy is AbstainPolicy.OFF or declined:
            return Verdict(text, False, refusal, threshold=threshold, checked_text=text)
        return Verdict(DECLINE, False, Refusal.NO_SOURCES, threshold=threshold, checked_text=text)
    indexed = {n: Passage(t) for n, t in passages.items()}
    names = proper_nouns(passages.values())
    asked = question_terms(question)
    relevance = Relevance(question, passages, similarity)
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
    changed = orphan or any(p.kept != p.numbers for p in pieces)
    checked = _render(pieces) if changed else text
    raw = 0.0 if declined else _raw_score(claims, relevance)
    score = calibrate(raw)
    supported = {n for p in pieces for n in p.kept}
    checks = _checks(scores, supported, supported, model_cited)
    off = Verdict(
        checked, score >= threshold, refusal, False, checks, score, raw, threshold, checked, score
    )
    if policy is AbstainPolicy.OFF or score >= threshold:
        return off
    found = quote(relevance) if policy is AbstainPolicy.QUOTE else None
    quoted = None
    if found is not None:
        quote_text, numbers, quote_raw = found
        quoted = Verdict(
            quote_text, calibrate(quote_raw) >= threshold, Refusal.NONE, True,
            _checks(scores, numbers, numbers, model_cited), calibrate(quote_raw), quote_raw,
            threshold, checked, score,
        )  # fmt: skip
    if declined:  # the model's decline stands, unless a quote reaches the threshold
        return quoted if quoted is not None and quoted.grounded else off
    added = _cite_for_the_model(claims, indexed)
    kept = [p for p in pieces if p.kept or not p.is_claim]  # cut the claims nothing supports
    raw = _raw_score([p for p in kept if p.is_claim], relevance)
    own = Verdict(
        _render(kept), calibrate(raw) >= threshold, refusal, False,
        _checks(scores, *(2 * [{n for p in kept for n in p.kept}]), model_cited, added),
        calibrate(raw), raw, threshold, checked, score,
    )  # fmt: skip
    best = quoted if quoted is not None and quoted.score > own.score else own
    servable = best is quoted or any(p.is_claim for p in kept)  # never an emptied answer
    if servable and (best.grounded or best.score >= abstain_below):
        return best
    return Verdict(DECLINE, False, Refusal.NOT_SUPPORTED, False,
                   _checks(scores, set(), set(), model_cited), 0.0, 0.0, threshold,
                   checked, score)  # fmt: skip


def quote(relevance: Relevance) -> tuple[str, set[int], float] | None:
    """The most relevant passage sentence (joined where a chunk boundary cut it), cut to
    `_QUOTE_MAX_WORDS` words and cited; the passages it cites and its raw score."""
    best = relevance.best()
    if best is None:
        return None
    words = (best.whole or best.text).split()
    cut = len(words) > _QUOTE_MAX_WORDS
    text = " ".join(words[:_QUOTE_MAX_WORDS]) + (" ..." if cut else "")
    markers = "".join(f"[{n}]" for n in sorted(best.numbers or (best.number,)))
    return f"{text} {markers}", set(best.numbers or (best.number,)), best.relevance


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
