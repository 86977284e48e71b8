from __future__ import annotations

import pytest

from services.retrieval.embedder import Embedder
from tests.unit.retrieval.shared import shared_embedder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return shared_embedder()
