"""Hybrid (BM25 + dense, RRF) beats dense alone on queries that hinge on rare identifiers."""

from __future__ import annotations

import random

import pytest

from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from tests.integration.retrieval.helpers import create, doc, search, upsert

pytestmark = pytest.mark.integration

TEMPLATES = [
    "Part {code} is a stainless steel hex bolt for the conveyor frame, rated for 8 kN.",
    "Part {code} is a replacement drive belt for the conveyor, 1200 mm long.",
    "Part {code} is a sealed ball bearing for conveyor rollers, 35 mm bore.",
    "Part {code} is a control relay for the conveyor motor, 24 V coil.",
]


def _catalogue(rng: random.Random) -> list[tuple[str, str]]:
    """Families of near-identical codes (one letter or two digits apart) on templated text.

    Sub-word embeddings blur such codes together; BM25 matches the exact code token.
    """
    parts: dict[str, str] = {}
    while len(parts) < 120:
        letters = "".join(rng.choice("ABCDEFGHKMNPQRSTVWXZ") for _ in range(2))
        digits = f"{rng.randint(1000, 9999)}"
        swapped = digits[:2] + digits[3] + digits[2]
        for variant in (f"{digits}-A", f"{digits}-B", f"{swapped}-A", f"{digits}-C"):
            code = f"{letters}-{variant}"
            parts[code] = TEMPLATES[len(parts) % 4].format(code=code)
    return sorted(parts.items())


def _hit_rate(results: dict[str, list[str]], k: int) -> float:
    return sum(code in ids[:k] for code, ids in results.items()) / len(results)


async def test_hybrid_beats_dense_on_product_code_queries(served):
    stub = served.stub
    rng = random.Random(7)
    parts = _catalogue(rng)
    await create(stub, "parts")
    await upsert(stub, "parts", [[doc(code, text, sku=code) for code, text in parts]])

    queries = {code: f"datasheet for {code}" for code, _ in rng.sample(parts, 40)}
    ranked: dict[pb.SearchMode, dict[str, list[str]]] = {}
    for mode in (pb.SEARCH_MODE_DENSE, pb.SEARCH_MODE_HYBRID):
        ranked[mode] = {}
        for code, query in queries.items():
            found = await search(stub, "parts", query, top_k=3, mode=mode)
            ranked[mode][code] = [c.document_id for c in found.chunks]

    dense1, hybrid1 = (_hit_rate(ranked[m], 1) for m in ranked)
    dense3, hybrid3 = (_hit_rate(ranked[m], 3) for m in ranked)
    print(f"hit@1 dense={dense1:.2f} hybrid={hybrid1:.2f}; hit@3 {dense3:.2f} vs {hybrid3:.2f}")
    assert hybrid3 >= 0.9
    assert hybrid1 >= dense1 + 0.2 and hybrid3 > dense3
