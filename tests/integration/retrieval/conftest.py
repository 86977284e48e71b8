"""A real retrieval server per test: fresh SQLite + snapshot folder, the session's embedder."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from services.common.testing import RunningServer, running_server
from services.retrieval.app import RetrievalApp
from services.retrieval.embedder import Embedder
from services.retrieval.settings import RetrievalSettings
from tests.unit.retrieval.shared import shared_embedder


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return shared_embedder()


def make_settings(data_dir: Path, **overrides: object) -> RetrievalSettings:
    return RetrievalSettings(data_dir=data_dir, executor_threads=2, **overrides)


class Served:
    """A running server, its app (for white-box waits) and a stub."""

    def __init__(self, running: RunningServer, app: RetrievalApp) -> None:
        self.running = running
        self.app = app
        self.stub = pb_grpc.RetrievalServiceStub(running.channel)


@contextlib.asynccontextmanager
async def serve(settings: RetrievalSettings, embedder: Embedder) -> AsyncIterator[Served]:
    app = RetrievalApp(settings, embedder)
    async with running_server(settings, app) as running:
        yield Served(running, app)


@pytest.fixture
async def served(tmp_path: Path, embedder: Embedder) -> AsyncIterator[Served]:
    async with serve(make_settings(tmp_path), embedder) as item:
        yield item
