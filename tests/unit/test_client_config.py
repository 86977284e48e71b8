"""The SDK's retry and replica settings, from the environment."""

from __future__ import annotations

from loraplex.client.balancing import BalancedChannel, adapter_of
from loraplex.client.base import ClientConfig
from loraplex.inference.v1 import inference_service_pb2 as pb


def test_retry_and_affinity_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LORAPLEX_RETRIES", "6")
    monkeypatch.setenv("LORAPLEX_AFFINITY_SPREAD", "2")
    monkeypatch.setenv("LORAPLEX_AFFINITY_BALANCE_FACTOR", "1.5")
    config = ClientConfig.from_env("inference", "127.0.0.1:1,127.0.0.1:2")
    assert (config.attempts, config.affinity_spread, config.balance_factor) == (6, 2, 1.5)
    channel = config.open_channel("inference")
    assert isinstance(channel, BalancedChannel)
    assert channel.picker.replicas == ("127.0.0.1:1", "127.0.0.1:2")
    assert channel.picker.spread == 2
    channel.close()


def test_backoff_doubles_with_jitter_up_to_its_ceiling():
    config = ClientConfig(address="x:1", first_backoff=0.2, max_backoff=1.0)
    for attempt, ceiling in ((1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)):
        waits = [config.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1


def test_only_inference_over_several_replicas_gets_the_affine_channel():
    listed = ClientConfig(address="127.0.0.1:1,127.0.0.1:2")
    assert not isinstance(listed.open_channel("registry"), BalancedChannel)
    assert not isinstance(
        ClientConfig(address="127.0.0.1:1").open_channel("inference"), BalancedChannel
    )
    assert isinstance(
        ClientConfig(address="dns:///localhost:1").open_channel("inference"), BalancedChannel
    )


def test_the_affinity_key_is_the_adapter_without_its_selector():
    generate = pb.GenerateTextRequest(input=pb.GenerationInput(adapter="acme/bot@prod"))
    assert adapter_of(generate) == "acme/bot"
    assert adapter_of(pb.GenerateTextRequest(input=pb.GenerationInput(prompt="hi"))) is None
    assert adapter_of(pb.ListLoadedAdaptersRequest()) is None
