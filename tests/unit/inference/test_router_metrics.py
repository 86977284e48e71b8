"""`vllm:lora_adapter_loaded`: one series per loaded adapter, the most recent at level gpu."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from services.common.adapter_ref import parse_ref
from services.inference.router_metrics import LOADED_ADAPTERS


def loaded_series() -> dict[str, str]:
    """adapter_name → level, as a scrape of this process's metrics shows them."""
    found = {}
    for family in REGISTRY.collect():
        if family.name == "vllm:lora_adapter_loaded":
            for sample in family.samples:
                assert sample.value == 1 and sample.labels["pinned"] == "false"
                found[sample.labels["adapter_name"]] = sample.labels["level"]
    return found


async def test_loaded_adapters_are_exported_by_recency_and_gone_when_evicted(rig):
    for version in range(3):
        await rig.push("acme", "acme/bot", seed=version)
    manager = rig.manager(max_loaded=2)
    LOADED_ADAPTERS.export(manager, slots=1)
    try:
        assert loaded_series() == {}
        await manager.resolve("acme", parse_ref("acme/bot@1"))
        await manager.resolve("acme", parse_ref("acme/bot@2"))
        assert loaded_series() == {"acme/bot@1": "cpu", "acme/bot@2": "gpu"}
        await manager.resolve("acme", parse_ref("acme/bot@1"))  # used again: back in a slot
        assert loaded_series() == {"acme/bot@2": "cpu", "acme/bot@1": "gpu"}
        await manager.resolve("acme", parse_ref("acme/bot@3"))  # evicts v2
        assert loaded_series() == {"acme/bot@1": "cpu", "acme/bot@3": "gpu"}
        assert manager.lookups == {"miss": 3, "hit": 1}
        text = generate_latest(REGISTRY).decode()
        assert (
            'vllm:lora_adapter_loaded{adapter_name="acme/bot@3",level="gpu",pinned="false"} 1.0'
            in text
        )
    finally:
        LOADED_ADAPTERS.forget(manager)
    assert loaded_series() == {}
