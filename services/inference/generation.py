"""One generation from request to result: admission, adapter, grounding, prompt, engine.

Plain async code over the engine, the adapter manager and the retrieval gateway;
the servicer only converts protobuf.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Counter, Histogram

from services.common import inputs
from services.common.adapter_ref import AdapterRef
from services.common.context import request_id_var
from services.common.errors import InvalidArgument
from services.inference.adapters import AdapterManager
from services.inference.admission import IN_ENGINE, Admission
from services.inference.engine import SamplingOptions
from services.inference.engine_api import InferenceEngine
from services.inference.grounding import AbstainPolicy, Refusal, check_answer
from services.inference.rag import (
    CitationFilter,
    Source,
    context_block,
    select_sources,
)
from services.inference.records import ChunkSearch, MetadataFilter, RetrievedChunk, SearchResult
from services.inference.relevance import Similarity
from services.inference.settings import InferenceSettings

ROLES = {"system", "user", "assistant"}
#: vLLM divides (multiplies) seen tokens' logits by the penalty: near 0 it overflows them to inf.
MIN_REPETITION_PENALTY = 0.01
MAX_REPETITION_PENALTY = 10.0
TTFT = Histogram(
    "loraplex_inference_ttft_seconds",
    "Time to first token",
    ["tenant", "adapter"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
TOKENS = Counter(
    "loraplex_inference_generated_tokens_total", "Generated tokens", ["tenant", "adapter"]
)
TOKENS_PER_SECOND = Histogram(
    "loraplex_inference_tokens_per_second",
    "Decode speed per request",
    ["tenant", "adapter"],
    buckets=(1, 5, 10, 20, 50, 100, 200, 500),
)


class Retriever(Protocol):
    async def search(self, tenant: str, search: ChunkSearch) -> SearchResult: ...


@dataclass(frozen=True)
class RagRequest:
    collection: str
    #: 0: the suite's default (`services.common.inputs.DEFAULT_TOP_K`).
    top_k: int = 0
    #: The client's metadata filter, passed on to retrieval, which checks it.
    filter: MetadataFilter | None = None
    #: None keeps every hit.
    min_score: float | None = None
    hybrid: bool = False
    max_context_tokens: int = 0
    abstain: AbstainPolicy = AbstainPolicy.OFF
    #: None: the tenant's default (`InferenceSettings.threshold_for`).
    grounded_threshold: float | None = None
    #: None: the service's (`InferenceSettings.abstain_threshold`).
    abstain_threshold: float | None = None


@dataclass(frozen=True)
class GenerationRequest:
    adapter: AdapterRef | None = None
    prompt: str = ""
    messages: Sequence[tuple[str, str]] = ()
    few_shot: Sequence[tuple[str, str]] = ()
    max_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 0.0
    top_k: int = 0
    stop: Sequence[str] = ()
    seed: int | None = None
    repetition_penalty: float = 0.0
    rag: RagRequest | None = None
    use_chat_template: bool | None = None


@dataclass(frozen=True)
class CitationRecord:
    number: int
    cited: bool
    chunk: RetrievedChunk
    support: float = 0.0
    supported: bool = False
    dropped: bool = False
    added: bool = False


@dataclass
class GenerationResult:
    text: str = ""
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    citations: list[CitationRecord] = field(default_factory=list)
    adapter_ref: str = ""
    collection: str = ""
    collection_revision: int = 0
    time_to_first_token_ms: float = 0.0
    total_ms: float = 0.0
    grounded: bool = False
    refusal: Refusal = Refusal.NONE
    generated_text: str = ""
    quoted: bool = False
    grounding_score: float = 0.0
    grounded_threshold: float = 0.0
    checked_text: str = ""
    checked_score: float = 0.0
    abstain_threshold: float = 0.0


class InferenceCore:
    def __init__(
        self,
        settings: InferenceSettings,
        engine: InferenceEngine,
        adapters: AdapterManager,
        retrieval: Retriever,
        admission: Admission,
        similarity: Similarity | None = None,
    ) -> None:
        self.engine = engine
        self.similarity = similarity
        self.adapters = adapters
        self.retrieval = retrieval
        self.admission = admission
        self.max_tokens_cap = settings.max_tokens_cap
        self.default_max_tokens = settings.default_max_tokens
        self.rag_context_share = settings.rag_context_share
        self.threshold_for = settings.threshold_for
        self.abstain_threshold = settings.abstain_threshold

    async def generate(
        self, tenant: str, request: GenerationRequest
    ) -> AsyncIterator[str | GenerationResult]:
        """Yields text deltas as generated, then the result with the checked text."""
        options = self._sampling(request)
        turns = self._turns(request)
        search = self._search(request.rag, turns) if request.rag else None
        started = time.perf_counter()
        with self.admission.slot(tenant):
            resolved = (
                await self.adapters.resolve(tenant, request.adapter) if request.adapter else None
            )
            result = GenerationResult(adapter_ref=resolved.ref if resolved else "")
            # Labels only from resolved adapters: a caller cannot mint metric series.
            label = str(resolved.version.name) if resolved else "base"
            sources: list[Source] = []
            if search is not None:
                sources, result.collection_revision = await self._retrieve(
                    tenant, search, request, turns, options
                )
                result.collection = request.rag.collection
            prompt_ids = self._render(request, turns, sources)
            result.prompt_tokens = len(prompt_ids)
            citations = CitationFilter(len(sources)) if sources else None
            request_id = f"{request_id_var.get()}-{uuid.uuid4().hex[:8]}"
            text: list[str] = []
            first_token_at = None
            engine_stream = self.engine.generate(
                prompt_ids, options, request_id, resolved.handle if resolved else None
            )
            with IN_ENGINE.labels(tenant, label).track_inprogress():
                async for chunk in engine_stream:
                    if first_token_at is None and chunk.completion_tokens:
                        first_token_at = time.perf_counter()
                        TTFT.labels(tenant, label).observe(first_token_at - started)
                    delta = citations.feed(chunk.delta) if citations else chunk.delta
                    if chunk.finished and citations:
                        delta += citations.flush()
                    if delta:
                        text.append(delta)
                        yield delta
                    result.completion_tokens = chunk.completion_tokens
                    result.finish_reason = chunk.finish_reason or result.finish_reason
        finished = time.perf_counter()
        result.text = "".join(text)
        result.total_ms = (finished - started) * 1000
        if first_token_at is not None:
            result.time_to_first_token_ms = (first_token_at - started) * 1000
            decode_s = finished - first_token_at
            if decode_s > 0 and result.completion_tokens > 1:
                TOKENS_PER_SECOND.labels(tenant, label).observe(
                    (result.completion_tokens - 1) / decode_s
                )
        TOKENS.labels(tenant, label).inc(result.completion_tokens)
        if search is not None and request.rag:
            await asyncio.to_thread(self._check, result, sources, turns[-1][1], tenant, request.rag)
        else:
            result.generated_text = result.text
        yield result

    def _check(
        self,
        result: GenerationResult,
        sources: list[Source],
        question: str,
        tenant: str,
        rag: RagRequest,
    ) -> None:
        """Every citation against its passage; unsupported ones dropped, abstain by policy."""
        result.generated_text = result.text
        passages = {s.number: s.chunk.text for s in sources}
        threshold = rag.grounded_threshold
        abstain = self.abstain_threshold if rag.abstain_threshold is None else rag.abstain_threshold
        verdict = check_answer(
            result.text, passages, question=question, policy=rag.abstain,
            threshold=self.threshold_for(tenant) if threshold is None else threshold,
            abstain_below=abstain, similarity=self.similarity,
        )  # fmt: skip
        result.abstain_threshold = abstain
        result.text, result.grounded = verdict.text, verdict.grounded
        result.refusal, result.quoted = verdict.refusal, verdict.quoted
        result.grounding_score, result.grounded_threshold = verdict.score, verdict.threshold
        result.checked_text, result.checked_score = verdict.checked_text, verdict.checked_score
        result.citations = [
            CitationRecord(s.number, c.cited, s.chunk, c.support, c.supported, c.dropped, c.added)
            for s in sources
            for c in [verdict.citations[s.number]]
        ]

    # -- request shaping ------------------------------------------------------------------

    def _sampling(self, request: GenerationRequest) -> SamplingOptions:
        max_tokens = request.max_tokens or self.default_max_tokens
        if not 0 < max_tokens <= self.max_tokens_cap:
            raise InvalidArgument(f"max_tokens must be between 1 and {self.max_tokens_cap}")
        # Written as `not (low <= x <= high)` so NaN, which fails every comparison, is refused.
        if not 0 <= request.temperature <= 2:
            raise InvalidArgument("temperature must be between 0 and 2")
        if not 0 <= request.top_p <= 1:
            raise InvalidArgument("top_p must be between 0 and 1")
        if request.top_k < 0:
            raise InvalidArgument("top_k must not be negative")
        penalty = request.repetition_penalty
        if penalty != 0 and not MIN_REPETITION_PENALTY <= penalty <= MAX_REPETITION_PENALTY:
            raise InvalidArgument(
                f"repetition_penalty must be between {MIN_REPETITION_PENALTY:g} and"
                f" {MAX_REPETITION_PENALTY:g} (1 = none; 0 or unset = 1)"
            )
        if len(request.stop) > 8 or any(not s or len(s) > 64 for s in request.stop):
            raise InvalidArgument("give at most 8 stop sequences of 1-64 characters")
        return SamplingOptions(
            max_tokens=max_tokens,
            temperature=request.temperature,
            top_p=request.top_p or 1.0,
            top_k=request.top_k,
            stop=tuple(request.stop),
            seed=request.seed,
            repetition_penalty=request.repetition_penalty or 1.0,
        )

    @staticmethod
    def _turns(request: GenerationRequest) -> list[tuple[str, str]]:
        if request.messages:
            for role, content in request.messages:
                if role not in ROLES:
                    raise InvalidArgument(f"message role {role!r} is not one of {sorted(ROLES)}")
                if not content:
                    raise InvalidArgument("messages must not be empty")
            if request.messages[-1][0] != "user":
                raise InvalidArgument("the last message must be the user's")
            return list(request.messages)
        if not request.prompt.strip():
            raise InvalidArgument("give a prompt or chat messages")
        return [("user", request.prompt)]

    @staticmethod
    def _search(rag: RagRequest, turns: list[tuple[str, str]]) -> ChunkSearch | None:
        """The retrieval a request asks for, checked before any work starts."""
        if not rag.collection:
            return None
        return ChunkSearch(
            collection=rag.collection,
            query=turns[-1][1],
            top_k=inputs.top_k(rag.top_k, "rag.top_k"),
            min_score=inputs.min_score(rag.min_score, "rag.min_score"),
            hybrid=rag.hybrid,
            filter=rag.filter,
        )

    async def _retrieve(
        self,
        tenant: str,
        search: ChunkSearch,
        request: GenerationRequest,
        turns: list[tuple[str, str]],
        options: SamplingOptions,
    ) -> tuple[list[Source], int]:
        rag = request.rag
        assert rag is not None
        reply = await self.retrieval.search(tenant, search)
        base_tokens = len(self._render(request, turns, []))
        room = self.engine.max_model_len - options.max_tokens - base_tokens - 32
        budget = rag.max_context_tokens or int(self.engine.max_model_len * self.rag_context_share)
        budget = min(budget, room)
        count = lambda text: len(self.engine.encode(text))  # noqa: E731
        return select_sources(reply.chunks, count, max(budget, 0)), reply.revision

    def _render(
        self, request: GenerationRequest, turns: list[tuple[str, str]], sources: list[Source]
    ) -> list[int]:
        context = context_block(sources) if sources else ""
        chat = request.use_chat_template
        if chat is None:
            chat = self.engine.has_chat_template
        if chat:
            messages: list[dict[str, str]] = []
            system = [c for r, c in turns if r == "system"]
            system_text = "\n\n".join([*system, context] if context else system)
            if system_text:
                messages.append({"role": "system", "content": system_text})
            for example_in, example_out in request.few_shot:
                messages.append({"role": "user", "content": example_in})
                messages.append({"role": "assistant", "content": example_out})
            messages += [{"role": r, "content": c} for r, c in turns if r != "system"]
            return self.engine.render_chat(messages)
        parts = [context] if context else []
        parts += [f"Input: {i}\nOutput: {o}\n" for i, o in request.few_shot]
        parts += [c for _, c in turns]
        if request.few_shot:
            parts[-1] = f"Input: {parts[-1]}\nOutput:"
        return self.engine.encode("\n".join(parts))
