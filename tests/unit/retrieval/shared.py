"""One embedder per test session, shared by unit and integration retrieval tests."""

from __future__ import annotations

import functools

from services.common.model_packages import packaged_model_dir
from services.retrieval.embedder import Embedder
from services.retrieval.settings import DEFAULT_EMBEDDING_MODEL


@functools.cache
def shared_embedder() -> Embedder:
    return Embedder(DEFAULT_EMBEDDING_MODEL, packaged_model_dir(), batch_size=64)
