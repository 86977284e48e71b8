"""The ingest lane takes tenants in turns; tokenizing is exact, segmented and bounded."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from services.common.errors import InvalidArgument, ResourceExhausted
from services.retrieval import validate
from services.retrieval.ingest import IngestLane
from services.retrieval.settings import RetrievalSettings

ENGLISH = "The pump's seal failed at 3.14 bar; see XK-4471-B.\n\tCafé ünïcode, naïve text. " * 400
CJK = "東京都は日本の首都であり、多くの人々が住んでいます。経済と文化の中心地です。" * 400


async def test_a_tenant_with_little_work_waits_one_slice_not_the_whole_queue():
    lane = IngestLane()
    started, gate = threading.Event(), threading.Event()
    order: list[str] = []

    def work(tag: str) -> str:
        if tag == "a0":
            started.set()
            gate.wait(30)
        order.append(tag)
        return tag

    try:
        first = asyncio.ensure_future(lane.run("acme", work, "a0"))
        assert await asyncio.to_thread(started.wait, 30)  # a0 runs and holds the lane
        rest = [asyncio.ensure_future(lane.run("acme", work, f"a{i}")) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        globex = asyncio.ensure_future(lane.run("globex", work, "g0"))
        await asyncio.sleep(0.05)
        gate.set()
        assert await asyncio.gather(first, *rest, globex) == ["a0", "a1", "a2", "a3", "g0"]
        assert order == ["a0", "a1", "g0", "a2", "a3"]
    finally:
        gate.set()
        lane.close()


async def test_a_cancelled_upsert_drops_its_queued_slices_and_errors_reach_the_caller():
    lane = IngestLane()
    gate = threading.Event()
    ran: list[str] = []

    def work(tag: str) -> None:
        if tag == "block":
            gate.wait(30)
        ran.append(tag)

    def fail() -> None:
        raise ValueError("bad slice")

    try:
        blocking = asyncio.ensure_future(lane.run("acme", work, "block"))
        await asyncio.sleep(0.1)
        doomed = asyncio.ensure_future(lane.run("acme", work, "doomed"))
        await asyncio.sleep(0.05)
        doomed.cancel()
        await asyncio.sleep(0.05)  # the cancel reaches the lane's future on the loop's next turn
        gate.set()
        await blocking
        with pytest.raises(ValueError, match="bad slice"):
            await lane.run("acme", fail)
        assert ran == ["block"]
    finally:
        gate.set()
        lane.close()


@pytest.mark.parametrize("text", [ENGLISH, CJK, "short", "", "  \n "])
def test_segmented_offsets_match_tokenizing_the_whole_text(embedder, text):
    whole = embedder.tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )["offset_mapping"]
    got = embedder.token_offsets(text)
    assert got.shape == (len(whole), 2) and got.tolist() == [list(p) for p in whole]


def test_cjk_costs_about_four_times_the_tokens_per_character(embedder):
    english = len(embedder.token_offsets(ENGLISH)) / len(ENGLISH)
    cjk = len(embedder.token_offsets(CJK)) / len(CJK)
    assert cjk > 0.9 and cjk > 2.5 * english  # measured: ~0.97 and ~0.36 for this text


def test_tokenizing_stops_soon_after_the_limit(embedder):
    full = embedder.token_offsets(CJK * 20)
    cut = embedder.token_offsets(CJK * 20, limit=1000)
    assert 1000 < len(cut) < len(full) / 3  # one tokenizer call past the limit at most
    assert np.array_equal(cut, full[: len(cut)])


def test_token_limits_and_names_are_refused_with_what_to_do():
    settings = RetrievalSettings(max_document_tokens=100, max_batch_tokens=150)
    validate.document_tokens("d", 100, 100, settings)
    with pytest.raises(ResourceExhausted, match="longer than 100 model tokens"):
        validate.document_tokens("d", 101, 101, settings)
    with pytest.raises(ResourceExhausted, match="send fewer documents"):
        validate.document_tokens("d", 90, 151, settings)
    for bad in ("a\n", "docs\n", "a\r\n", "x\t", "é"):
        with pytest.raises(InvalidArgument, match="collection name"):
            validate.collection_name(bad)
    assert validate.collection_name("a.b-c_9") == "a.b-c_9"
