"""Markers as declared in pyproject: `gpu` tests skip with a reason where no CUDA GPU is."""

from __future__ import annotations

import functools
import shutil

import pytest


@functools.cache
def _cuda_reason() -> str:
    """Empty when a CUDA GPU is usable, else why not (torch imported only if asked)."""
    if shutil.which("nvidia-smi") is None:
        return "needs a CUDA GPU: no nvidia-smi on this machine"
    try:
        import torch
    except ImportError:
        return "needs a CUDA GPU: torch is not installed"
    return "" if torch.cuda.is_available() else "needs a CUDA GPU: torch sees none"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("gpu") is not None and _cuda_reason():
            item.add_marker(pytest.mark.skip(reason=_cuda_reason()))
