"""Inference settings (`LORAPLEX_INFERENCE_*`); vLLM engine flags pass straight through."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.common.adapter_weights import DEFAULT_MAX_ABS
from services.common.model_packages import DEFAULT_MODEL_PACKAGE
from services.common.settings import ServiceSettings
from services.inference.relevance import DEFAULT_ABSTAIN_THRESHOLD, DEFAULT_THRESHOLD
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
    #: Export vLLM's router metrics (`vllm:num_requests_waiting`, `vllm:lora_requests_info`,
    #: `vllm:lora_adapter_loaded`, ...) on the metrics port, for llm-d / production-stack.
    router_metrics: bool = True

    #: Grounding score an answer needs to be flagged grounded (docs/grounding.md); a
    #: request's `rag.grounded_threshold` wins, then the tenant's entry below.
    grounded_threshold: float = Field(DEFAULT_THRESHOLD, ge=0, le=1)
    #: Per-tenant defaults, "acme=0.6,beta=0.75".
    grounded_thresholds: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    #: Below this grounding score, abstain policies serve nothing (a request's own wins).
    abstain_threshold: float = Field(DEFAULT_ABSTAIN_THRESHOLD, ge=0, le=1)
    #: Installed package of the sentence-transformers model whose cosine joins the
    #: grounding score's relevance (the retrieval embedder); "" scores relevance lexically.
    relevance_model: str = DEFAULT_MODEL_PACKAGE

    @field_validator("grounded_thresholds", mode="before")
    @classmethod
    def _tenant_thresholds(cls, value: object) -> object:
        """ "acme=0.6,beta=0.75" (or a mapping); every value a number in [0, 1]."""
        if isinstance(value, str):
            pairs = [item.partition("=") for item in value.split(",") if item.strip()]
            if any(not sep or not tenant.strip() for tenant, sep, _ in pairs):
                raise ValueError('looks like "tenant=0.6,other=0.75"')
            value = {tenant.strip(): number.strip() for tenant, _, number in pairs}
        if isinstance(value, dict):
            for tenant, number in value.items():
                try:
                    number = float(number)
                except (TypeError, ValueError):
                    raise ValueError(f"tenant {tenant!r}: {number!r} is not a number") from None
                if math.isnan(number) or not 0 <= number <= 1:
                    raise ValueError(f"tenant {tenant!r}: the threshold must be in [0, 1]")
        return value

    def threshold_for(self, tenant: str) -> float:
        """The tenant's default grounded threshold."""
        return self.grounded_thresholds.get(tenant, self.grounded_threshold)

    #: OpenAI-compatible HTTP (chat, completions, responses, models; docs/openai.md).
    openai_port: int = 8054
    #: Largest OpenAI request body accepted (HTTP 413 above).
    openai_max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)

    def model_path(self) -> Path:
        return self.model or self.data_dir / "models" / self.model_name
