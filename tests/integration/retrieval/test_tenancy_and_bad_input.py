"""Another tenant sees nothing; bad input gets a precise status and never touches stored data."""

from __future__ import annotations

import grpc
import pytest

from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from tests.integration.retrieval.helpers import (
    ACME,
    GLOBEX,
    create,
    doc,
    equals,
    search,
    stats,
    upsert,
)

pytestmark = pytest.mark.integration


async def _status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details()


async def _seed(stub) -> pb.GetCollectionStatsResponse:
    await create(stub, "secret")
    await upsert(stub, "secret", [[doc("plan", "Acme launches the rocket skates in May.", k="v")]])
    return await stats(stub, "secret")


async def test_globex_cannot_reach_acme_collection_through_any_rpc(served):
    stub = served.stub
    before = await _seed(stub)
    not_found = (grpc.StatusCode.NOT_FOUND, "collection 'secret' not found")
    upsert_call = stub.UpsertDocuments(
        iter([pb.UpsertDocumentsRequest(collection="secret", documents=[doc("x", "pwned")])]),
        metadata=GLOBEX,
        timeout=10,
    )

    async def drain():
        return [item async for item in upsert_call]

    calls = {
        "get": stub.GetCollection(pb.GetCollectionRequest(name="secret"), metadata=GLOBEX),
        "search": search(stub, "secret", "rocket skates", metadata=GLOBEX),
        "upsert": drain(),
        "delete-docs": stub.DeleteDocuments(
            pb.DeleteDocumentsRequest(collection="secret", document_ids=["plan"]), metadata=GLOBEX
        ),
        "delete-by-filter": stub.DeleteDocuments(
            pb.DeleteDocumentsRequest(
                collection="secret", filter=pb.MetadataFilter(conditions=[equals("k", "v")])
            ),
            metadata=GLOBEX,
        ),
        "stats": stats(stub, "secret", metadata=GLOBEX),
        "delete-collection": stub.DeleteCollection(
            pb.DeleteCollectionRequest(name="secret"), metadata=GLOBEX
        ),
    }
    for name, call in calls.items():
        assert await _status(call) == not_found, name

    listed = await stub.ListCollections(pb.ListCollectionsRequest(), metadata=GLOBEX)
    assert list(listed.collections) == []
    # Globex may use the same name for its own collection, which stays separate.
    await create(stub, "secret", metadata=GLOBEX)
    assert (await search(stub, "secret", "rocket skates", metadata=GLOBEX)).chunks == []

    after = await stats(stub, "secret")
    assert (after.documents, after.chunks, after.revision) == (
        before.documents,
        before.chunks,
        before.revision,
    )
    hits = await search(stub, "secret", "rocket skates")
    assert [c.document_id for c in hits.chunks] == ["plan"]


async def test_bad_input_is_refused_precisely_and_stored_data_is_intact(tmp_path, embedder):
    from tests.integration.retrieval.conftest import make_settings, serve

    settings = make_settings(
        tmp_path, max_document_chars=2000, max_documents_per_batch=4, max_batch_chars=5000
    )
    async with serve(settings, embedder) as served:
        stub = served.stub
        before = await _seed(stub)
        invalid, exhausted = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED

        for bad in ("../x", "", "a/b", "x" * 64, ".hidden"):
            code, message = await _status(create(stub, bad))
            assert code == invalid and "collection name" in message
        code, message = await _status(create(stub, "m", embedding_model="gpt-9"))
        assert code == invalid and "unknown embedding model 'gpt-9'" in message
        code, message = await _status(create(stub, "m", chunk_size_tokens=5000))
        assert code == invalid and "chunk_size_tokens must be between 8 and 254" in message
        code, _ = await _status(create(stub, "secret"))
        assert code == grpc.StatusCode.ALREADY_EXISTS

        async def refused(batches, stub=stub):
            return await _status(upsert(stub, "secret", batches))

        assert await refused([[doc("e", "   ")]]) == (invalid, "document 'e' has empty text")
        code, message = await refused([[doc("big", "word " * 500)]])
        assert (
            code == exhausted and "document 'big' has 2500 characters, the limit is 2000" in message
        )
        code, message = await refused([[doc(f"n{i}", "short text") for i in range(5)]])
        assert code == exhausted and "batch has 5 documents, at most 4" in message
        code, message = await refused([[doc(f"c{i}", "y" * 1900) for i in range(3)]])
        assert code == exhausted and "batch holds 5700 characters" in message
        code, message = await refused([[doc("twice", "a"), doc("twice", "b")]])
        assert code == invalid and "appears twice" in message
        # A bad batch after a good one: the good one is durable, the bad one wrote nothing.
        code, _ = await refused([[doc("ok", "A fine document.")], [doc("", "no id")]])
        assert code == invalid
        assert await _status(upsert(stub, "nope", [[doc("a", "b")]])) == (
            grpc.StatusCode.NOT_FOUND,
            "collection 'nope' not found",
        )

        no_values = pb.MetadataFilter(conditions=[pb.MetadataCondition(key="k")])
        code, message = await _status(search(stub, "secret", "rocket", filter=no_values))
        assert code == invalid and "needs 'equals' or a non-empty 'in' list" in message
        empty_key = pb.MetadataFilter(conditions=[equals("", "v")])
        code, message = await _status(search(stub, "secret", "rocket", filter=empty_key))
        assert code == invalid and "needs a metadata key" in message
        assert (await _status(search(stub, "secret", "  ")))[0] == invalid
        code, message = await _status(search(stub, "secret", "rocket", top_k=500))
        assert code == invalid and "top_k must be between 1 and 100" in message
        both = pb.DeleteDocumentsRequest(
            collection="secret",
            document_ids=["plan"],
            filter=pb.MetadataFilter(conditions=[equals("k", "v")]),
        )
        code, message = await _status(stub.DeleteDocuments(both, metadata=ACME))
        assert code == invalid and "either document_ids or a filter" in message
        code, _ = await _status(
            stub.ListCollections(pb.ListCollectionsRequest(page_token="garbage!"), metadata=ACME)
        )
        assert code == invalid

        after = await stats(stub, "secret")
        assert after.documents == before.documents + 1  # only "ok" was added
        assert after.revision == before.revision + 1
        hits = await search(stub, "secret", "rocket skates", top_k=1)
        assert hits.chunks[0].document_id == "plan"
