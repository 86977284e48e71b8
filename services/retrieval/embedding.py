"""Embedding arbitrary texts with a collection embedding model (`EmbedTexts`, the OpenAI
embeddings route). Texts take the query path, so they never wait behind an ingest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.common.errors import InvalidArgument
from services.retrieval.embedder import Embedder

MAX_TEXTS = 256
MAX_TEXT_CHARS = 8192


@dataclass(frozen=True)
class EmbeddedTexts:
    model: str
    vectors: np.ndarray
    tokens: int


def check_texts(texts: list[str]) -> None:
    if not texts:
        raise InvalidArgument("give at least one text to embed")
    if len(texts) > MAX_TEXTS:
        raise InvalidArgument(f"give at most {MAX_TEXTS} texts per request")
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidArgument(f"text {i} is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidArgument(f"text {i} is longer than {MAX_TEXT_CHARS} characters")


def embed_texts(embedder: Embedder, texts: list[str]) -> EmbeddedTexts:
    """Blocking: run on the executor. Token counts include the model's two special tokens."""
    tokens = sum(min(len(embedder.token_offsets(t)), embedder.max_tokens) + 2 for t in texts)
    return EmbeddedTexts(embedder.name, embedder.encode_query(texts), tokens)
