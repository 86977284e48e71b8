"""The sentence-transformers model on ONNX Runtime with int8 matmuls: the fast embedder.

optimum cannot be installed beside transformers 5, so the model is exported here:
once per model content, at first use, from the local directory (never downloaded),
with `torch.onnx.export` (mean pooling and normalisation inside the graph). Then every
matmul by a constant weight is rewritten to int8 with **per-row** (per-token) dynamic
activation scales (`per_row_int8`): weights are int8 per output column; each token's
activations get their own scale at run time (QuantizeLinear along the rows of a 2-D
view), then a u8-by-s8 MatMulInteger, and DequantizeLinear by the same row scales. ONNX
Runtime's own `quantize_dynamic` gives the whole activation tensor one scale, so a
token with an outlier coarsens every other token in the batch; that was the error
measured below. The result is cached on disk under a key of the model's bytes, so later
starts only open it.

What was tried (2026-12-07). Selection used CALIBRATION text only: demo/acme_train.jsonl's
290 questions over the demo handbook's 64-token chunks, recall@10 against fp32; the
bench's 156 eval questions were measured once per candidate for the record, never used
to rank nodes or pick a variant. chunks/s: 119-359 chunks of 200 tokens in slices of 8,
one thread, one loaded 2-core VM (same process, so only the ratios mean anything):
- quantize_dynamic of the unfused export: per-tensor weights 0.89, per-channel 0.91,
  with symmetric activations 0.92 (calibration 0.907); 11.7 chunks/s. This was "v2",
  the shipped model until v4.
- the same after BERT fusion: 0.913 (calibration 0.907); as fast as v2 when measured
  side by side (1.69-2.31x torch against v2's 1.88-2.25x).
  Asymmetric activations 0.917 and 13.5; per-tensor weights 0.81.
- fused, then keeping the most sensitive nodes in fp32 (leave-one-out: each node kept
  fp32 alone, ranked by the fall in 1 - cosine on calibration text; the embeddings'
  LayerNorm and the FFN-out matmuls of layers 0-2 ranked first): calibration recall 0.92
  with 2 kept, 0.923 with 4, 0.937 with 6; the error is spread over every node and comes
  from the per-tensor activation scale, so excluding nodes buys little per node lost.
- fused, every matmul MatMulNBits 8-bit (block 32), attention fp32: 0.987 (calibration
  0.987), but 10.7 chunks/s (the fp32 attention dominates).
- the same with QAttention for the fused QKV ("v3"): 0.959 (calibration 0.959),
  19.4 chunks/s; block 128 instead of 32: 0.963, 14.7 chunks/s. In one process,
  interleaved, v3 ran at 1.09-1.57x torch where v2 ran at 1.63-2.35x: MatMulNBits at
  8 bits is slower than MatMulInteger here. v3 is in this file at commit f3500b3.
- hybrids (fused; the calibration ranking's top matmuls as MatMulNBits, the rest dynamic,
  embeddings fp32): top 3 calibration 0.924 (eval 0.929), top 6 0.941 (eval 0.944), at
  1.9-2.0x torch; none reached 0.95 on calibration text.
- per-row activation scales ("v4", this module), unfused: 0.954 (calibration 0.948).
  Written with Abs/Round/Cast ops around MatMulInteger it ran at 0.9x v2 (with s8
  activations instead of u8, 0.2-0.4x torch); with QuantizeLinear/DequantizeLinear along
  the rows, 0.90-1.06x v2 (three interleaved rounds, 2.0-2.4x torch). Fused graph with
  per-row matmuls and fp32 attention: 0.966 (calibration 0.959) at 1.3-1.6x torch; with
  the QKV matmul per-row too (MultiHeadAttention): 0.957 (0.947) at 1.67x. Keeping any
  one of the 36 matmuls in fp32 moves calibration recall by at most 0.005 (leave-one-out,
  first 9 nodes).
- not tried: static QDQ quantization with a calibration reader; SmoothQuant.

v4 replaces v2: the same speed within the noise, recall 0.954 against 0.92.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import onnx

from services.retrieval.embedder import TextEmbedder, _offline

log = logging.getLogger(__name__)

#: Bumped whenever the export or the quantization changes, so old caches are not reused.
_FORMAT = "onnx-int8-v4-per-row"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _model_key(path: Path) -> str:
    """Content hash of the model's weights and configuration, plus the export format."""
    digest = hashlib.sha256(_FORMAT.encode())
    for file in sorted(path.rglob("*")):
        if file.is_file() and file.suffix in {".json", ".safetensors", ".bin", ".txt"}:
            digest.update(str(file.relative_to(path)).encode())
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:24]


def _sentence_config(path: Path) -> tuple[int, int]:
    """(max sequence length, dimension) of a mean-pooled, normalised sentence model."""
    modules = json.loads((path / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"]:
        raise RuntimeError(f"onnx-int8 supports Transformer+Pooling models, not {kinds}")
    pooling = json.loads((path / modules[1]["path"] / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise RuntimeError("onnx-int8 supports mean pooling only")
    if "Normalize" not in kinds:
        raise RuntimeError("onnx-int8 supports normalised sentence models only")
    config = json.loads((path / "sentence_bert_config.json").read_text())
    return int(config["max_seq_length"]), int(pooling["word_embedding_dimension"])


def export_int8(path: Path, target: Path) -> None:
    """Exports the model at `path` to ONNX and writes its int8 quantization to `target`."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()

    class Sentence(torch.nn.Module):
        """Transformer, mean pooling over real tokens, L2 normalisation: one graph."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    sample = torch.ones((2, 8), dtype=torch.long)
    axes = {name: {0: "batch", 1: "tokens"} for name in _INPUTS}
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(
                Sentence(),
                (sample, torch.ones_like(sample), torch.zeros_like(sample)),
                str(fp32),
                input_names=list(_INPUTS),
                output_names=["embedding"],
                dynamic_axes={**axes, "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        int8 = Path(tmp) / "model-int8.onnx"
        onnx.save(per_row_int8(onnx.load(str(fp32))), str(int8))
        # Rename into place: a process that died mid-export leaves nothing half-written.
        os.replace(int8, target)


def per_row_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every MatMul by a constant 2-D weight becomes int8 with per-row activation scales.

    The model's first input is the token ids (batch, tokens), and every such matmul's
    input is (batch, tokens, K), as in a BERT-style encoder.

    y = x @ w becomes, on the 2-D view x2 (rows by K) of x: s = max|x2| per row / 127;
    q = QuantizeLinear(x2, s, 128) (u8); acc = MatMulInteger(q, wq, 128, 0) (int32);
    y = DequantizeLinear(acc, s) * ws, reshaped back. wq/ws: int8 weights and their
    scale per output column (symmetric). Exact up to rounding; other nodes untouched.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    added: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        added.append(numpy_helper.from_array(value, name))
        return name

    inv127 = const("int8_inv127", np.array(1 / 127.0, np.float32))
    eps = const("int8_eps", np.array(1e-12, np.float32))
    zero_u8 = const("int8_zp", np.array(128, np.uint8))
    zero_s8 = const("int8_wzp", np.array(0, np.int8))
    make = helper.make_node
    # Every matmul input is (batch, tokens, K): its row count and output shape come from
    # the token ids once, not per matmul (each node costs a few µs on a one-query call).
    ids = graph.input[0].name
    nodes: list[onnx.NodeProto] = [
        make("Shape", [ids], ["int8_lead"]),
        make("ReduceProd", ["int8_lead"], ["int8_rows"], keepdims=1),
        make("Expand", [const("int8_zp_1", np.array([128], np.uint8)), "int8_rows"], ["int8_zps"]),
    ]
    out_shapes: dict[int, str] = {}
    replaced = 0
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight).astype(np.float32)
        k, n = w.shape
        scale = np.abs(w).max(axis=0) / 127.0
        scale[scale == 0] = 1.0
        p = f"int8_{replaced}_"
        replaced += 1
        wq = const(p + "wq", np.clip(np.round(w / scale), -127, 127).astype(np.int8))
        ws = const(p + "ws", scale.astype(np.float32))
        if n not in out_shapes:
            out_shapes[n] = f"int8_shape_{n}"
            width = const(f"int8_n_{n}", np.array([n], np.int64))
            nodes.append(make("Concat", ["int8_lead", width], [out_shapes[n]], axis=0))
        x = node.input[0]
        nodes += [
            make("Reshape", [x, const(p + "view", np.array([-1, k], np.int64))], [p + "x2"]),
            make("Abs", [p + "x2"], [p + "abs"]),
            make("ReduceMax", [p + "abs"], [p + "max"], axes=[1], keepdims=0),
            make("Mul", [p + "max", inv127], [p + "s0"]),
            make("Max", [p + "s0", eps], [p + "s"]),  # an all-zero row must not divide by 0
            make("QuantizeLinear", [p + "x2", p + "s", "int8_zps"], [p + "q"], axis=0),
            make("MatMulInteger", [p + "q", wq, zero_u8, zero_s8], [p + "acc"]),
            make("DequantizeLinear", [p + "acc", p + "s"], [p + "y0"], axis=0),
            make("Mul", [p + "y0", ws], [p + "y1"]),
            make("Reshape", [p + "y1", out_shapes[n]], list(node.output), name=node.name),
        ]
    if not replaced:
        raise RuntimeError("the exported model has no matmul by a constant weight")
    used = {name for node in nodes for name in node.input}
    kept = [t for t in graph.initializer if t.name in used] + added
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def cached_int8(path: Path, cache_dir: Path) -> Path:
    """The int8 model of `path`, exported on the first call for these model bytes."""
    target = cache_dir / _model_key(path) / "model-int8.onnx"
    if not target.exists():
        log.info("exporting %s to ONNX int8 under %s (once)", path.name, target.parent)
        export_int8(path, target)
        shutil.copy(path / "modules.json", target.parent / "modules.json")
    return target


class OnnxEmbedder(TextEmbedder):
    """An int8 ONNX Runtime session per path (documents, queries), each with its own
    tokenizer and thread count, like the torch embedder's two paths."""

    def __init__(self, name: str, path: Path, cache_dir: Path, batch_size: int = 64) -> None:
        _offline()
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self._ort = ort
        self.batch_size = batch_size
        max_length, self.dimension = _sentence_config(path)
        self.max_tokens = max_length - 2
        self.model_file = cached_int8(path, cache_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        super().__init__(name, path, _copy(tokenizer))
        self._paths = {
            purpose: _Path(self._session(1), self._tokenizer(tokenizer, max_length))
            for purpose in ("documents", "queries")
        }
        log.info("embedder %s loaded on ONNX Runtime int8 (%d-d)", name, self.dimension)

    def _session(self, threads: int):  # type: ignore[no-untyped-def]
        options = self._ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return self._ort.InferenceSession(
            str(self.model_file), options, providers=["CPUExecutionProvider"]
        )

    @staticmethod
    def _tokenizer(tokenizer, max_length: int):  # type: ignore[no-untyped-def]
        own = _copy(tokenizer)
        own.enable_truncation(max_length)
        own.enable_padding(pad_id=tokenizer.pad_token_id or 0, pad_token=tokenizer.pad_token)
        return own

    def encode(self, texts: list[str], threads: int = 0) -> np.ndarray:
        """Document vectors: unit-norm float32, so inner product is cosine similarity."""
        return self._encode(self._paths["documents"], texts, threads)

    def encode_query(self, texts: list[str], threads: int = 0) -> np.ndarray:
        """Query vectors, on a session of their own that no document encode holds."""
        return self._encode(self._paths["queries"], texts, threads)

    def _encode(self, path: _Path, texts: list[str], threads: int) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        with path.lock:
            if threads > 0 and threads != path.threads:
                path.session, path.threads = self._session(threads), threads
            # Similar lengths side by side, as sentence-transformers does: less padding.
            order = np.argsort([-len(t) for t in texts], kind="stable")
            for start in range(0, len(texts), self.batch_size):
                picked = order[start : start + self.batch_size]
                encodings = path.tokenizer.encode_batch([texts[i] for i in picked])
                ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
                mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
                feed = {"input_ids": ids, "attention_mask": mask}
                feed["token_type_ids"] = np.zeros_like(ids)
                out[picked] = path.session.run(None, feed)[0]
        return out


def _copy(tokenizer):  # type: ignore[no-untyped-def]
    """A fresh fast tokenizer: one is never used from two threads at once."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())


class _Path:
    """One encode path: its session (rebuilt if its thread count changes) and tokenizer."""

    def __init__(self, session, tokenizer) -> None:  # type: ignore[no-untyped-def]
        self.session = session
        self.threads = 1
        self.tokenizer = tokenizer
        self.lock = threading.Lock()
