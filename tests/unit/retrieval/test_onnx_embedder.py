"""The int8 ONNX embedder: exported once from the packaged model, close to fp32, cached."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from services.common.model_packages import packaged_model_dir
from services.retrieval.onnx_embedder import BLOCK, OnnxEmbedder

TEXTS = [
    "The pump's seal failed after the pressure test.",
    "Invoices are due thirty days after the shipment arrives.",
    "Calibrate the torque wrench before tightening the flange bolts.",
    "x",
]


@pytest.fixture(scope="module")
def onnx_embedder(tmp_path_factory) -> OnnxEmbedder:
    return OnnxEmbedder("minilm", packaged_model_dir(), tmp_path_factory.mktemp("onnx"))


def test_int8_vectors_track_fp32_and_the_export_is_cached(embedder, onnx_embedder):
    onnx_ = onnx_embedder
    assert (onnx_.dimension, onnx_.max_tokens) == (embedder.dimension, embedder.max_tokens)
    reference = embedder.encode(TEXTS)
    vectors = onnx_.encode(TEXTS)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() > 0.97 and cosines.mean() > 0.99
    # Each query still finds its own document first.
    queries = onnx_.encode_query(TEXTS[:3])
    assert (queries @ vectors.T).argmax(axis=1).tolist() == [0, 1, 2]
    assert np.array_equal(onnx_.token_offsets(TEXTS[0]), embedder.token_offsets(TEXTS[0]))

    exported = onnx_.model_file.stat().st_mtime_ns
    again = OnnxEmbedder("minilm", packaged_model_dir(), onnx_.model_file.parents[1])
    assert again.model_file == onnx_.model_file
    assert again.model_file.stat().st_mtime_ns == exported
    # A query is embedded alone, so its vector does not depend on any batch.
    assert np.allclose(again.encode_query(TEXTS[:1]), onnx_.encode_query(TEXTS[:1]), atol=1e-6)


def test_the_graph_is_fused_and_every_weight_is_int8(onnx_embedder):
    graph = onnx.load(str(onnx_embedder.model_file)).graph
    kinds = [n.op_type for n in graph.node]
    # BERT fusion happened; the fused attention carries its QKV matmul, quantized.
    assert kinds.count("QAttention") == 6 and "Attention" not in kinds
    assert kinds.count("SkipLayerNormalization") == 12
    # Every other matmul: 8-bit blockwise weights, none left in fp32.
    blockwise = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert len(blockwise) == 18 and "MatMul" not in kinds
    for node in blockwise:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert (attributes["bits"], attributes["block_size"]) == (8, BLOCK)
    weights = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert not any(n.input[1] in weights for n in blockwise)
