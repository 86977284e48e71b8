"""Grounding thresholds: request option, tenant default, service default, bad values."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from loraplex.client.inference import generation_input
from services.common.errors import InvalidArgument
from services.inference.admission import Admission
from services.inference.convert import generation_request, result
from services.inference.generation import (
    GenerationRequest,
    GenerationResult,
    InferenceCore,
    RagRequest,
)
from services.inference.grounding import AbstainPolicy
from services.inference.records import ChunkSearch, RetrievedChunk, SearchResult
from services.inference.relevance import DEFAULT_ABSTAIN_THRESHOLD, DEFAULT_THRESHOLD
from services.inference.settings import InferenceSettings
from tests.unit.inference.fake_engine import FakeEngine

WARRANTY = "The Tern battery pack is covered for 12 months only."


def test_tenant_thresholds_come_from_one_setting(monkeypatch):
    monkeypatch.setenv("LORAPLEX_INFERENCE_GROUNDED_THRESHOLDS", "acme=0.6, beta = 0.75")
    settings = InferenceSettings()
    assert settings.grounded_thresholds == {"acme": 0.6, "beta": 0.75}
    assert settings.threshold_for("acme") == 0.6
    assert settings.threshold_for("globex") == settings.grounded_threshold == DEFAULT_THRESHOLD
    assert settings.abstain_threshold == DEFAULT_ABSTAIN_THRESHOLD


@pytest.mark.parametrize("value", ["acme", "acme=high", "acme=1.5", "acme=nan", "=0.5"])
def test_a_bad_tenant_threshold_stops_the_service(monkeypatch, value):
    monkeypatch.setenv("LORAPLEX_INFERENCE_GROUNDED_THRESHOLDS", value)
    with pytest.raises(ValidationError):
        InferenceSettings()


def test_request_thresholds_are_optional_and_checked():
    unset = generation_request(generation_input("q", collection="c")).rag
    assert unset.grounded_threshold is None and unset.abstain_threshold is None
    spec = generation_input("q", collection="c", grounded_threshold=0.7, abstain_threshold=0.1)
    rag = generation_request(spec).rag
    assert (rag.grounded_threshold, rag.abstain_threshold) == (0.7, 0.1)
    zero = generation_request(generation_input("q", collection="c", grounded_threshold=0.0))
    assert zero.rag.grounded_threshold == 0.0  # 0 is a value, not "unset"
    for bad in (1.01, -0.1, math.nan):
        with pytest.raises(InvalidArgument, match="grounded_threshold must be between 0 and 1"):
            generation_request(generation_input("q", collection="c", grounded_threshold=bad))
    with pytest.raises(InvalidArgument, match="abstain_threshold"):
        generation_request(generation_input("q", collection="c", abstain_threshold=2.0))


def test_the_result_carries_score_thresholds_and_checked_text():
    record = GenerationResult(
        text="Quoted. [1]", grounded=True, quoted=True, grounding_score=0.8,
        grounded_threshold=0.45, checked_text="Own answer.", checked_score=0.1,
        abstain_threshold=0.25,
    )  # fmt: skip
    message = result(record)
    assert (message.grounding_score, message.grounded_threshold) == (0.8, 0.45)
    assert (message.checked_text, message.checked_score) == ("Own answer.", 0.1)
    assert message.abstain_threshold == 0.25 and message.quoted and message.grounded


class OneChunk:
    async def search(self, tenant: str, search: ChunkSearch) -> SearchResult:
        chunk = RetrievedChunk(document_id="warranty", text=WARRANTY, source_title="Warranty")
        return SearchResult((chunk,), revision=1)


async def _ask(settings: InferenceSettings, tenant: str, rag: RagRequest) -> GenerationResult:
    engine = FakeEngine(script=["The", " Tern", " battery", " pack", " is", " covered", " for",
                                " 12", " months.", " [1]"])  # fmt: skip
    core = InferenceCore(settings, engine, None, OneChunk(), Admission(8, 4))  # type: ignore[arg-type]
    request = GenerationRequest(
        prompt="How long is the Tern battery pack covered?", max_tokens=16, rag=rag
    )
    final = None
    async for item in core.generate(tenant, request):
        if isinstance(item, GenerationResult):
            final = item
    assert final is not None
    return final


async def test_the_request_then_the_tenant_then_the_service_threshold_applies():
    settings = InferenceSettings(grounded_thresholds={"acme": 0.99}, relevance_model="")
    tenant = await _ask(settings, "acme", RagRequest(collection="c"))
    other = await _ask(settings, "globex", RagRequest(collection="c"))
    asked = await _ask(settings, "acme", RagRequest(collection="c", grounded_threshold=0.1))
    assert tenant.grounded_threshold == 0.99 and not tenant.grounded
    assert other.grounded_threshold == DEFAULT_THRESHOLD and other.grounded
    assert asked.grounded_threshold == 0.1 and asked.grounded
    assert tenant.grounding_score == other.grounding_score == asked.grounding_score > 0
    assert (
        tenant.checked_text == tenant.text and tenant.abstain_threshold == DEFAULT_ABSTAIN_THRESHOLD
    )
    refused = await _ask(
        settings, "acme",
        RagRequest(collection="c", abstain=AbstainPolicy.REFUSE, abstain_threshold=1.0),
    )  # fmt: skip
    assert refused.text == "The sources do not say." and refused.abstain_threshold == 1.0
