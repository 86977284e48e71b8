"""Calls spread over replicas: the SDK (adapter-affine for inference) and service channels.

Real registry and inference servers on loopback; the inference replicas run the real
servicer, core and adapter manager over the unit tests' fake engine (no vLLM here: the
engine's side is tested in tests/integration/inference/test_replicas.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loraplex.client.base import ClientConfig, LoraplexClientError
from loraplex.client.inference import InferenceClient
from loraplex.client.registry import RegistryClient
from loraplex.inference.v1 import inference_service_pb2 as pb
from loraplex.inference.v1 import inference_service_pb2_grpc as pb_grpc
from services.common import errors
from services.common.adapter_ref import parse_ref
from services.common.calls import Remote
from services.common.channels import open_channel
from services.common.testing import (
    TEST_SERVICE_KEYS,
    TEST_TENANT_KEYS,
    server_thread,
    tenant_metadata,
)
from services.inference.app import InferenceApp
from services.inference.gateways import RegistryGateway
from services.inference.records import EngineRequirements
from services.inference.settings import InferenceSettings
from services.registry.app import RegistryApp
from tests.integration.registry.adapters import make_lora_adapter
from tests.integration.registry.conftest import registry_settings
from tests.unit.inference.fake_engine import FakeEngine

pytestmark = pytest.mark.integration
ADAPTERS = [f"acme/a{i}" for i in range(6)]


class CountingEngine(FakeEngine):
    """The fake engine, counting the generations this replica ran."""

    def __init__(self) -> None:
        super().__init__()
        self.generations = 0

    async def generate(self, *args, **kwargs):
        self.generations += 1
        async for chunk in super().generate(*args, **kwargs):
            yield chunk


@dataclass
class Replicas:
    tmp: Path
    registry: object
    engines: list[CountingEngine]
    ports: list[int]
    stack: contextlib.ExitStack
    inference_stacks: list[contextlib.ExitStack]

    @property
    def address(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self, **overrides) -> InferenceClient:
        config = ClientConfig(
            address=self.address, api_key=TEST_TENANT_KEYS["acme"], timeout=30, **overrides
        )
        return InferenceClient(config=config)

    def stop(self, index: int) -> None:
        self.inference_stacks[index].close()

    def replica_of(self, port: int) -> int:
        return self.ports.index(port)


@pytest.fixture
def replicas(tmp_path) -> Iterator[Replicas]:
    with contextlib.ExitStack() as stack:
        settings = registry_settings(tmp_path / "registry")
        registry = stack.enter_context(server_thread(settings, RegistryApp(settings)))
        with RegistryClient(
            config=ClientConfig(
                address=f"127.0.0.1:{registry.port}", api_key=TEST_TENANT_KEYS["acme"]
            )
        ) as pusher:
            for i, name in enumerate(ADAPTERS):
                folder = make_lora_adapter(tmp_path / name, seed=i, base_model="loraplex/fake")
                pusher.push(name, folder)
        engines, ports, stacks = [], [], []
        for i in range(2):
            engine = CountingEngine()
            inference = InferenceSettings(
                data_dir=tmp_path / f"inference{i}",
                registry_addr=f"127.0.0.1:{registry.port}",
                service_key=TEST_SERVICE_KEYS["inference"],
            )
            own = contextlib.ExitStack()
            server = own.enter_context(server_thread(inference, InferenceApp(inference, engine)))
            stack.callback(own.close)
            engines.append(engine)
            ports.append(server.port)
            stacks.append(own)
        yield Replicas(tmp_path, registry, engines, ports, stack, stacks)


def loaded_on(engine: FakeEngine) -> set[str]:
    return {name.partition("@")[0] for name in engine.load_calls}


def test_sdk_calls_without_an_adapter_go_round_robin(replicas):
    with replicas.client() as client:
        for _ in range(10):
            assert client.generate("hi", max_tokens=4).text == "Hello world"
    assert [e.generations for e in replicas.engines] == [5, 5]


def test_sdk_adapter_calls_stay_on_the_adapters_home_replica(replicas):
    with replicas.client() as client:
        for _ in range(3):
            for name in ADAPTERS:
                assert client.generate("hi", adapter=name).text.startswith(f"<{name}@1>")
                streamed = list(client.stream("hi", adapter=name))
                assert streamed[-1].adapter_ref == f"{name}@1"
        picker = client.channel.picker
        assert [picker.in_flight(r) for r in picker.replicas] == [0, 0]  # streams released
        homes = {name: picker.ranking(name)[0] for name in ADAPTERS}
    home_of = {name: replicas.replica_of(int(h.rpartition(":")[2])) for name, h in homes.items()}
    # Each replica loaded exactly the adapters homed on it. Which replica that is
    # follows the ports (random here), so it is read from the picker, not assumed:
    # all six land on one replica once in 32 runs.
    for index, engine in enumerate(replicas.engines):
        assert loaded_on(engine) == {n for n, home in home_of.items() if home == index}
    assert sum(len(e.load_calls) for e in replicas.engines) == len(ADAPTERS)  # one load each


def test_sdk_retries_a_stopped_replicas_calls_on_the_other(replicas):
    with replicas.client() as client:
        client.generate("hi", max_tokens=2)  # both replicas connected
        client.generate("hi", max_tokens=2)
        replicas.stop(1)
        for name in ["", *ADAPTERS]:
            assert client.generate("hi", adapter=name, max_tokens=3).text
            assert list(client.stream("hi", adapter=name, max_tokens=3))[-1].text
    assert loaded_on(replicas.engines[0]) == set(ADAPTERS)


def test_sdk_gives_up_after_its_tries(replicas):
    replicas.stop(0)
    replicas.stop(1)
    with (
        replicas.client(attempts=2, first_backoff=0.01) as client,
        pytest.raises(LoraplexClientError, match="UNAVAILABLE"),
    ):
        client.generate("hi")


def test_service_channels_round_robin_over_a_replica_list(replicas):
    async def spread() -> None:
        channel = open_channel(replicas.address)
        stub = pb_grpc.InferenceServiceStub(channel)
        request = pb.GenerateTextRequest(input=pb.GenerationInput(prompt="hi"))
        try:
            await channel.channel_ready()
            for _ in range(40):
                await stub.GenerateText(request, metadata=tenant_metadata("acme"))
        finally:
            await channel.close()

    asyncio.run(spread())
    counts = [e.generations for e in replicas.engines]
    assert sum(counts) == 40 and min(counts) >= 10, counts


def test_service_remote_over_registry_replicas_survives_one_stopping(tmp_path):
    settings = registry_settings(tmp_path / "shared")
    folder = make_lora_adapter(tmp_path / "bot", base_model="loraplex/fake")
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(server_thread(settings, RegistryApp(settings)))
        second_stack = contextlib.ExitStack()
        second = second_stack.enter_context(server_thread(settings, RegistryApp(settings)))
        stack.callback(second_stack.close)
        with RegistryClient(
            config=ClientConfig(
                address=f"127.0.0.1:{first.port},127.0.0.1:{second.port}",
                api_key=TEST_TENANT_KEYS["acme"],
            )
        ) as registry:
            registry.push("acme/bot", folder)  # through both replicas' round robin

        async def resolve_all(stop_second: bool) -> list[int]:
            remote = Remote(
                "registry",
                f"127.0.0.1:{first.port},127.0.0.1:{second.port}",
                TEST_SERVICE_KEYS["inference"],
            )
            gateway = RegistryGateway(remote)
            engine = FakeEngine()
            requirements = EngineRequirements(engine.model_name, 16, engine.lora_modules)
            try:
                versions = []
                for i in range(8):
                    if stop_second and i == 2:
                        await asyncio.to_thread(second_stack.close)
                    info = await gateway.resolve("acme", parse_ref("acme/bot"), requirements)
                    versions.append(info.version)
                return versions
            finally:
                await remote.close()

        assert asyncio.run(resolve_all(stop_second=True)) == [1] * 8


def test_a_bad_replica_list_stops_the_start_up_with_its_reason():
    with pytest.raises(errors.FailedPrecondition, match="registry address is invalid"):
        Remote("registry", "registry-0:50051,registry-1:50051", "key")
