"""What the inference core needs of an engine: VllmEngine in service, a fake in unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from services.inference.engine import AdapterHandle, EngineChunk, SamplingOptions


class InferenceEngine(Protocol):
    model_name: str
    #: Linear-layer names adapters may target ("q_proj", ...).
    lora_modules: tuple[str, ...]

    @property
    def max_model_len(self) -> int: ...

    @property
    def max_lora_rank(self) -> int: ...

    @property
    def has_chat_template(self) -> bool: ...

    def encode(self, text: str) -> list[int]: ...

    def render_chat(self, messages: Sequence[dict[str, str]]) -> list[int]: ...

    def next_adapter_id(self) -> int: ...

    async def load_adapter(self, adapter: AdapterHandle) -> None:
        """Raises a LoraplexError with a message fit for clients when it cannot serve it."""

    async def unload_adapter(self, adapter: AdapterHandle) -> None: ...

    def generate(
        self,
        prompt_ids: list[int],
        options: SamplingOptions,
        request_id: str,
        adapter: AdapterHandle | None,
    ) -> AsyncIterator[EngineChunk]: ...

    async def abort(self, request_id: str) -> None: ...
