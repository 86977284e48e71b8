"""A deterministic engine for unit tests of the inference core: no vLLM, no model.

Tokens are whitespace words; a generation replays its script one word per chunk
(the adapter's name first when one is given), so tests know every byte it yields.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence

from services.common.errors import FailedPrecondition
from services.inference.engine import AdapterHandle, EngineChunk, SamplingOptions


class FakeEngine:
    def __init__(
        self,
        script: Sequence[str] = ("Hello", " world"),
        max_model_len: int = 512,
        refuse: Sequence[str] = (),
    ) -> None:
        self.model_name = "loraplex/fake"
        self.lora_modules = ("q_proj", "v_proj")
        self.script = list(script)
        self._max_model_len = max_model_len
        self.refuse = set(refuse)
        self.loaded: dict[int, AdapterHandle] = {}
        self.load_calls: list[str] = []
        self._ids = itertools.count(1)

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    @property
    def max_lora_rank(self) -> int:
        return 16

    @property
    def has_chat_template(self) -> bool:
        return False

    def encode(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]

    def render_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.encode("\n".join(m["content"] for m in messages))

    def next_adapter_id(self) -> int:
        return next(self._ids)

    async def load_adapter(self, adapter: AdapterHandle) -> None:
        self.load_calls.append(adapter.name)
        if adapter.name.partition("@")[0] in self.refuse:
            raise FailedPrecondition(f"adapter {adapter.name} cannot be served by this engine")
        assert (adapter.path / "adapter_config.json").exists(), "loaded before its files"
        self.loaded[adapter.lora_id] = adapter

    async def unload_adapter(self, adapter: AdapterHandle) -> None:
        del self.loaded[adapter.lora_id]

    async def generate(
        self,
        prompt_ids: list[int],
        options: SamplingOptions,
        request_id: str,
        adapter: AdapterHandle | None,
    ) -> AsyncIterator[EngineChunk]:
        words = ([f"<{adapter.name}>"] if adapter else []) + self.script
        words = words[: options.max_tokens]
        for count, word in enumerate(words, 1):
            done = count == len(words)
            yield EngineChunk(word, count, done, "stop" if done else None)

    async def abort(self, request_id: str) -> None:
        pass
