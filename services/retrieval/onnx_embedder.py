"""The sentence-transformers model on ONNX Runtime with int8 weights: the fast embedder.

optimum cannot be installed beside transformers 5, so the model is exported here:
once per model content, at first use, from the local directory (never downloaded),
with `torch.onnx.export` (mean pooling and normalisation inside the graph), then
quantized with ONNX Runtime's dynamic int8 quantization: per-channel weights and
symmetric activations (measured on the demo handbook: per-tensor weights keep 0.89 of
fp32's top-10, per-channel 0.91, with symmetric activations 0.92; keeping the FFN
matmuls in fp32 reaches 0.96 but loses most of the speed). The result is cached on
disk under a key of the model's bytes, so later starts only open it.

What was tried (2026-12-07). Selection used CALIBRATION text only: demo/acme_train.jsonl's
290 questions over the demo handbook's 64-token chunks, recall@10 against fp32; the
bench's 156 eval questions were measured once per candidate for the record, never used
to rank nodes or pick a variant. chunks/s: 119 chunks of 200 tokens in slices of 8, one
thread, one loaded 2-core VM (same process, so only the ratios mean anything):
- quantize_dynamic of the unfused export: per-tensor weights 0.89, per-channel 0.91,
  with symmetric activations 0.92 (calibration 0.907); 11.7 chunks/s.
- the same after BERT fusion: 0.913 (calibration 0.907), 16.8 chunks/s (1.44x unfused).
  Asymmetric activations 0.917 and 13.5; per-tensor weights 0.81.
- fused, then keeping the most sensitive nodes in fp32 (leave-one-out: each node kept
  fp32 alone, ranked by the fall in 1 - cosine on calibration text; the embeddings'
  LayerNorm and the FFN-out matmuls of layers 0-2 ranked first): calibration recall 0.92
  with 2 kept, 0.923 with 4, 0.937 with 6; the error is spread over every node and comes
  from the per-tensor activation scale, so excluding nodes buys little per node lost.
- fused, every matmul MatMulNBits 8-bit (block 32), attention fp32: 0.987 (calibration
  0.987), but 10.7 chunks/s (the fp32 attention dominates).
- the same with QAttention for the fused QKV ("v3"): 0.959 (calibration 0.959),
  19.4 chunks/s; block 128 instead of 32: 0.963, 14.7 chunks/s.
- the trade: in one process, interleaved, 359 chunks, v3 ran at 1.27x and
  1.57x torch's chunks/s where the unfused dynamic model (v2) ran at 1.63x and 2.27x;
  in another, v3 1.09x / 1.42x, v2 1.78x / 2.35x. MatMulNBits at 8 bits is slower than
  MatMulInteger here, so v3 buys the recall (0.959 against 0.92) with speed.
- hybrids (fused; the calibration ranking's top matmuls as MatMulNBits, the rest dynamic,
  embeddings fp32): top 3 calibration 0.924 (eval 0.929), top 6 0.941 (eval 0.944), at
  1.9-2.0x torch; none reached 0.95 on calibration text.
- not tried: static QDQ quantization with a calibration reader.

This module stays v2 (the unfused dynamic model): the backend exists to embed faster,
and v3, the only variant at 0.95 recall, gave up a third of v2's speed. Writing v3's
MatMulNBits weights needs a hand-written blockwise quantizer (ONNX Runtime's own needs
the `onnx_ir` package, not installed); v3 is in this file at commit f3500b3.
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

from services.retrieval.embedder import TextEmbedder, _offline

log = logging.getLogger(__name__)

#: Bumped whenever the export or the quantization changes, so old caches are not reused.
_FORMAT = "onnx-int8-v2"
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
    from onnxruntime.quantization import QuantType, quantize_dynamic
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
        quantize_dynamic(
            str(fp32),
            str(int8),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"ActivationSymmetric": True},
        )
        # Rename into place: a process that died mid-export leaves nothing half-written.
        os.replace(int8, target)


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
