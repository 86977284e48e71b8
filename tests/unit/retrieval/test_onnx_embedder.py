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
