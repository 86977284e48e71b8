"""EmbedTexts: any text through a collection embedding model's query path, with limits."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from loraplex.retrieval.v1 import retrieval_service_pb2 as pb
from services.common.testing import service_metadata, tenant_metadata

pytestmark = pytest.mark.integration


async def test_vectors_match_the_query_path_and_bad_input_is_refused(served, embedder):
    reply = await served.stub.EmbedTexts(
        pb.EmbedTextsRequest(texts=["refund policy", "badges"]), metadata=tenant_metadata("acme")
    )
    assert reply.embedding_model == embedder.name and reply.tokens >= 6
    vectors = np.array([e.values for e in reply.embeddings], dtype=np.float32)
    assert vectors.shape == (2, embedder.dimension)
    assert np.allclose(vectors, embedder.encode_query(["refund policy", "badges"]), atol=1e-5)
    as_gateway = await served.stub.EmbedTexts(
        pb.EmbedTextsRequest(texts=["x"]), metadata=service_metadata("gateway", "acme")
    )
    assert len(as_gateway.embeddings) == 1
    for request, fragment in [
        (pb.EmbedTextsRequest(), "at least one"),
        (pb.EmbedTextsRequest(texts=["ok", " "]), "text 1 is empty"),
        (pb.EmbedTextsRequest(texts=["x"] * 257), "at most 256"),
        (pb.EmbedTextsRequest(texts=["x" * 9000]), "longer than"),
        (pb.EmbedTextsRequest(texts=["x"], embedding_model="nope"), "unknown embedding model"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await served.stub.EmbedTexts(request, metadata=tenant_metadata("acme"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.EmbedTexts(pb.EmbedTextsRequest(texts=["x"]))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
