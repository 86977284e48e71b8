"""Hostile-input corpus for retrieval: one row per attack, against one real server.

Each case sends its request(s) and must get exactly the status it names (never
INTERNAL or UNKNOWN); afterwards the service still answers its readiness probe and
every tenant's stored data is exactly as seeded. Add a case: one `Case(...)` line.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from services.retrieval.app import SERVICE_NAME
from tests.integration.retrieval.conftest import make_settings, serve
from tests.integration.retrieval.helpers import ACME, GLOBEX, create, doc, search, stats, upsert
from tests.unit.retrieval.shared import shared_embedder

pytestmark = pytest.mark.integration
INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
Stub = pb_grpc.RetrievalServiceStub


def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[Stub], Awaitable[object]]
    code: grpc.StatusCode


def _list(token: str = "", size: int = 0) -> Callable[[Stub], Awaitable[object]]:
    request = pb.ListCollectionsRequest(page_token=token, page_size=size)
    return lambda s: s.ListCollections(request, metadata=ACME, timeout=30)


def _upsert(*docs: pb.Document, collection: str = "kb") -> Callable[[Stub], Awaitable[object]]:
    return lambda s: upsert(s, collection, [list(docs)])


def _search(query: str = "rocket", collection: str = "kb", **fields) -> Callable:
    return lambda s: search(s, collection, query, **fields)


async def _raw_stream(stub: Stub, requests: list[pb.UpsertDocumentsRequest]) -> list:
    call = stub.UpsertDocuments(iter(requests), metadata=ACME, timeout=30)
    return [item async for item in call]


def _conditions(n: int, values: int = 1) -> pb.MetadataFilter:
    return pb.MetadataFilter(
        conditions=[
            pb.MetadataCondition(key=f"k{i}", **{"in": pb.StringList(values=["v"] * values)})
            for i in range(n)
        ]
    )


CJK = "東京都は日本の首都であり、多くの人々が住んでいます。" * 400  # ~10k chars, ~10k tokens
CASES = [
    # Names: `$` used to accept a trailing newline.
    Case("create name with trailing newline", lambda s: create(s, "a\n"), INVALID),
    Case("create name with CRLF", lambda s: create(s, "kb\r\n"), INVALID),
    Case("create name with NUL", lambda s: create(s, "a\x00b"), INVALID),
    Case("create name non-ASCII", lambda s: create(s, "é"), INVALID),
    Case("create name path", lambda s: create(s, "../kb"), INVALID),
    Case("create name too long", lambda s: create(s, "x" * 64), INVALID),
    Case("create unknown model path", lambda s: create(s, "m", embedding_model="../../x"), INVALID),
    Case("create negative chunk size", lambda s: create(s, "m", chunk_size_tokens=-5), INVALID),
    Case("create huge overlap", lambda s: create(s, "m", chunk_overlap_tokens=2**31 - 1), INVALID),
    Case("create unknown index kind", lambda s: create(s, "m", index_kind=99), INVALID),
    Case(
        "get name with newline",
        lambda s: s.GetCollection(pb.GetCollectionRequest(name="kb\n"), metadata=ACME),
        INVALID,
    ),
    Case(
        "delete name with newline",
        lambda s: s.DeleteCollection(pb.DeleteCollectionRequest(name="kb\n"), metadata=ACME),
        INVALID,
    ),
    Case("stats name with newline", lambda s: stats(s, "kb\n"), INVALID),
    Case("upsert into name with newline", _upsert(doc("x", "y"), collection="kb\n"), INVALID),
    # Page tokens: deep nesting and wrong shapes.
    Case("page_token nested 100k deep", _list(_token("[" * 100_000)), INVALID),
    Case("page_token a number", _list(_token("5")), INVALID),
    Case("page_token a list", _list(_token("[1,2,3]")), INVALID),
    Case("page_token an object list", _list(_token('[{"a":1},"x"]')), INVALID),
    Case("page_token not base64 JSON", _list("!!!"), INVALID),
    Case("page_token 1 MB", _list("A" * 1_000_000), INVALID),
    Case("negative page_size", _list(size=-1), INVALID),
    # Documents.
    Case("doc id with newline control", _upsert(doc("a\nb", "text")), INVALID),
    Case("doc with empty text", _upsert(doc("e", "  \n ")), INVALID),
    Case("doc twice in a batch", _upsert(doc("d", "a"), doc("d", "b")), INVALID),
    Case("doc over the character limit", _upsert(doc("big", "word " * 5000)), EXHAUSTED),
    Case("CJK doc over the token limit", _upsert(doc("cjk", CJK)), EXHAUSTED),
    Case("metadata key with newline", _upsert(doc("m", "text", **{"k\n": "v"})), INVALID),
    Case("metadata value too long", _upsert(doc("m", "text", k="v" * 5000)), INVALID),
    Case("upsert stream without messages", lambda s: _raw_stream(s, []), INVALID),
    Case(
        "upsert first message without collection",
        lambda s: _raw_stream(s, [pb.UpsertDocumentsRequest(documents=[doc("x", "y")])]),
        INVALID,
    ),
    Case("upsert into a foreign name", _upsert(doc("x", "y"), collection="theirs"), NOT_FOUND),
    # Searches.
    Case("empty query", _search("   "), INVALID),
    Case("query too long", _search("q" * 5000), INVALID),
    Case("negative top_k", _search(top_k=-1), INVALID),
    Case("top_k too large", _search(top_k=10_000), INVALID),
    Case("unknown search mode", _search(mode=99), INVALID),
    Case("too many filter conditions", _search(filter=_conditions(33)), INVALID),
    Case("too many filter values", _search(filter=_conditions(1, 2000)), INVALID),
    Case(
        "filter condition without values",
        _search(filter=pb.MetadataFilter(conditions=[pb.MetadataCondition(key="k")])),
        INVALID,
    ),
    Case(
        "delete by ids and filter at once",
        lambda s: s.DeleteDocuments(
            pb.DeleteDocumentsRequest(
                collection="kb", document_ids=["plan"], filter=_conditions(1)
            ),
            metadata=ACME,
        ),
        INVALID,
    ),
]


@dataclass
class Seeded:
    stub: Stub
    health: health_pb2_grpc.HealthStub


async def _state(stub: Stub) -> tuple:
    """Everything a case could have changed, for both tenants."""
    out = []
    for who in (ACME, GLOBEX):
        listed = await stub.ListCollections(pb.ListCollectionsRequest(), metadata=who)
        names = [c.name for c in listed.collections]
        for name in names:
            numbers = await stats(stub, name, metadata=who)
            hits = await search(stub, name, "rocket skates", metadata=who, top_k=3)
            out.append(
                (
                    name,
                    numbers.documents,
                    numbers.chunks,
                    numbers.revision,
                    [c.document_id for c in hits.chunks],
                )
            )
    return tuple(out)


@pytest.fixture(scope="module")
async def seeded(tmp_path_factory) -> AsyncIterator[tuple[Seeded, tuple]]:
    settings = make_settings(
        tmp_path_factory.mktemp("hostile-retrieval"),
        max_document_chars=20_000,
        max_document_tokens=4_000,
        max_metadata_value_chars=1024,
    )
    async with serve(settings, shared_embedder()) as served:
        stub = served.stub
        await create(stub, "kb")
        await upsert(stub, "kb", [[doc("plan", "Acme launches the rocket skates in May.", k="v")]])
        await create(stub, "theirs", metadata=GLOBEX)
        await upsert(
            stub, "theirs", [[doc("g", "Globex rocket skates are blue.")]], metadata=GLOBEX
        )
        health = health_pb2_grpc.HealthStub(served.running.channel)
        yield Seeded(stub, health), await _state(stub)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_input_is_refused_and_harms_nothing(seeded, case: Case):
    served, before = seeded
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await case.send(served.stub)
    code = err.value.code()
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), err.value.details()
    assert code == case.code, (code, err.value.details())
    assert err.value.details() and "Traceback" not in err.value.details()
    reply = await served.health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert await _state(served.stub) == before
