"""A tiny base model built once per session (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.training.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_tiny_model(root / "tiny")
    return root
