"""The `vllm:` metrics routers built for vLLM read, on this replica's metrics port.

The llm-d router's endpoint picker (what a Gateway API Inference Extension
`InferencePool` points at) and vLLM's production-stack router score replicas by
vLLM's own series: `vllm:num_requests_waiting`, `vllm:num_requests_running`,
`vllm:kv_cache_usage_perc`, `vllm:cache_config_info` and
`vllm:lora_requests_info{max_lora,running_lora_adapters,waiting_lora_adapters}`.
Those come from vLLM's own `PrometheusStatLogger`, which the engine attaches
(`VllmEngine.start`), so names, labels and values are vLLM's exactly.

vLLM is adding `vllm:lora_adapter_loaded{adapter_name,level,pinned}` (one series per
adapter loaded on the replica, present while loaded; vllm-project/vllm#54830), which
lets a router prefer a replica where an idle adapter is still warm. This version of
vLLM does not export it, so this module does, from the adapter manager's loaded set:
the `max_loras` most recently used adapters are at `level="gpu"` (the engine's active
LoRA slots, which vLLM fills least-recently-used first), the rest at `level="cpu"`;
loraplex pins none.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LOADED = "vllm:lora_adapter_loaded"


class LoadedAdapters(Protocol):
    def loaded_names(self) -> list[str]:
        """Names of the loaded adapters (vLLM's `lora_name`), least recently used first."""


class LoadedAdapterCollector(Collector):
    """Reads every registered replica's loaded adapters when Prometheus scrapes."""

    def __init__(self) -> None:
        self._sources: dict[int, tuple[LoadedAdapters, int]] = {}

    def export(self, source: LoadedAdapters, slots: int) -> None:
        """`slots`: the engine's `max_loras`, the adapters vLLM keeps active at once."""
        self._sources[id(source)] = (source, slots)

    def forget(self, source: LoadedAdapters) -> None:
        self._sources.pop(id(source), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            LOADED,
            "LoRA adapters loaded on this replica (1 while loaded), by residency level",
            labels=["adapter_name", "level", "pinned"],
        )
        levels: dict[str, str] = {}  # several sources only when tests run replicas in-process
        for source, slots in list(self._sources.values()):
            names = source.loaded_names()
            cold = len(names) - slots
            for index, name in enumerate(names):
                if levels.get(name) != "gpu":
                    levels[name] = "gpu" if index >= cold else "cpu"
        for name, level in levels.items():
            family.add_metric([name, level, "false"], 1)
        yield family


#: One per process: Prometheus refuses two collectors of one name.
LOADED_ADAPTERS = LoadedAdapterCollector()
REGISTRY.register(LOADED_ADAPTERS)


def stat_loggers() -> list[type]:
    """vLLM's Prometheus stat logger, for `AsyncLLM.from_engine_args(stat_loggers=...)`:
    with it alone vLLM keeps its periodic log lines off and records every engine step's
    scheduler stats into the process's default registry."""
    from vllm.v1.metrics.loggers import PrometheusStatLogger

    return [PrometheusStatLogger]
