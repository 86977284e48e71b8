"""The int8 ONNX embedder: exported once from the packaged model, close to fp32, cached."""

from __future__ import annotations

import numpy as np

from services.common.model_packages import packaged_model_dir
from services.retrieval.onnx_embedder import OnnxEmbedder

TEXTS = [
    "The pump's seal failed after the pressure test.",
    "Invoices are due thirty days after the shipment arrives.",
    "Calibrate the torque wrench before tightening the flange bolts.",
    "x",
]


def test_int8_vectors_track_fp32_and_the_export_is_cached(embedder, tmp_path):
    onnx = OnnxEmbedder("minilm", packaged_model_dir(), tmp_path)
    assert (onnx.dimension, onnx.max_tokens) == (embedder.dimension, embedder.max_tokens)
    reference = embedder.encode(TEXTS)
    vectors = onnx.encode(TEXTS)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    assert (vectors * reference).sum(axis=1).min() > 0.95
    # Each query still finds its own document first.
    queries = onnx.encode_query(TEXTS[:3])
    assert (queries @ vectors.T).argmax(axis=1).tolist() == [0, 1, 2]
    assert np.array_equal(onnx.token_offsets(TEXTS[0]), embedder.token_offsets(TEXTS[0]))

    exported = onnx.model_file.stat().st_mtime_ns
    again = OnnxEmbedder("minilm", packaged_model_dir(), tmp_path)
    assert again.model_file == onnx.model_file
    assert again.model_file.stat().st_mtime_ns == exported
    # A query is embedded alone, so its vector does not depend on any batch.
    assert np.allclose(again.encode_query(TEXTS[:1]), onnx.encode_query(TEXTS[:1]), atol=1e-6)


def test_per_row_scales_keep_a_quiet_token_exact_beside_an_outlier():
    """One scale per token: a token with huge activations must not coarsen its
    neighbours (a per-tensor scale rounds the quiet token below to zero)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from services.retrieval.onnx_embedder import per_row_int8

    rng = np.random.default_rng(0)
    weight = rng.normal(size=(16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "one-matmul",
        [  # token ids first, as in the exported encoder; the matmul reads hidden states
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "tokens", 16]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "tokens", 8])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    quantized = per_row_int8(model)
    assert "MatMul" not in {n.op_type for n in quantized.graph.node}
    onnx.checker.check_model(quantized)
    session = ort.InferenceSession(
        quantized.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    x = rng.normal(size=(2, 3, 16)).astype(np.float32)
    x[0, 0] *= 1000.0  # an outlier token
    x[1, 2] = 0.0  # a token of zeros: zeros out, not NaN
    y = session.run(None, {"ids": np.zeros((2, 3), np.int64), "x": x})[0]
    reference = x @ weight
    assert y.shape == (2, 3, 8) and np.isfinite(y).all()
    assert np.array_equal(y[1, 2], np.zeros(8, np.float32))
    for b, t in [(0, 0), (0, 1), (1, 0)]:
        error = np.abs(y[b, t] - reference[b, t]).max() / np.abs(reference[b, t]).max()
        assert error < 0.03, (b, t, error)
