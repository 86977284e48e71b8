"""Inference settings (`LORAPLEX_INFERENCE_*`); vLLM engine flags pass straight through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.adapter_weights import DEFAULT_MAX_ABS
from services.common.settings import ServiceSettings
from services.models.store import DEFAULT_MODEL


class InferenceSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="LORAPLEX_INFERENCE_", extra="ignore", populate_by_name=True
    )

    service_name: str = "inference"
    port: int = 50054
    metrics_port: int = 51054

    #: Base model in the store (`loraplex models import`) at <data_dir>/models/<name>.
    model_name: str = DEFAULT_MODEL
    #: Or any local model folder (HF layout), overriding model_name.
    model: Path | None = None
    #: Name adapters must have been trained on; default: model_name.
    served_model_name: str = ""
    dtype: str = "float32"
    max_model_len: int = 2048
    max_num_seqs: int = 32
    kv_cache_bytes: int = 512 * 1024 * 1024
    enable_lora: bool = True
    max_lora_rank: int = 64
    #: Adapters in one batch (vLLM `max_loras`).
    max_loras: int = 8
    #: Adapters kept loaded in CPU memory (vLLM `max_cpu_loras`).
    max_cpu_loras: int = 64
    #: Any other vLLM AsyncEngineArgs, as JSON merged over the settings above, e.g.
    #: '{"tensor_parallel_size": 2, "enable_prefix_caching": true}'.
    engine_args: dict[str, Any] = Field(default_factory=dict)
    registry_addr: str = "127.0.0.1:50051"
    retrieval_addr: str = "127.0.0.1:50052"
    #: This service's key; the registry and retrieval must list it as service "inference".
    service_key: str = ""
    #: Tenants whose alias moves are watched from start-up (others: from their first request).
    watch_tenants: list[str] = Field(default_factory=list)

    adapter_cache_bytes: int = 4 * 1024**3
    #: Largest |weight| an adapter may hold; larger (or NaN/inf) is refused before loading.
    adapter_max_abs_weight: float = Field(DEFAULT_MAX_ABS, gt=0)
    #: Stop a generation whose logits turn non-finite (costs vLLM one sampled logprob per token).
    non_finite_guard: bool = True
    max_tokens_cap: int = 1024
    default_max_tokens: int = 256
    #: Requests waiting or running in the engine; more are RESOURCE_EXHAUSTED.
    max_pending: int = 64
    #: Requests one tenant may have in flight at once.
    per_tenant_concurrency: int = 16
    retrieval_timeout_seconds: float = 5.0
    registry_timeout_seconds: float = 60.0
    #: Share of the model length RAG context may use when the request names no budget.
    rag_context_share: float = 0.5
    #: OpenAI-compatible HTTP (chat, completions, responses, models; docs/openai.md).
    openai_port: int = 8054
    #: Largest OpenAI request body accepted (HTTP 413 above).
    openai_max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)

    def model_path(self) -> Path:
        return self.model or self.data_dir / "models" / self.model_name
