"""Inference client: generate or stream answers with a tenant adapter and RAG."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from loraplex.client.base import BaseClient
from loraplex.inference.v1 import inference_service_pb2 as pb
from loraplex.inference.v1 import inference_service_pb2_grpc as pb_grpc

#: `abstain=` values: what the service answers when no passage supports the model's answer.
ABSTAIN_POLICIES = {
    "off": pb.ABSTAIN_POLICY_UNSPECIFIED,
    "refuse": pb.ABSTAIN_POLICY_REFUSE,
    "quote": pb.ABSTAIN_POLICY_QUOTE,
}


def generation_input(
    prompt: str = "",
    *,
    messages: Sequence[tuple[str, str]] = (),
    adapter: str = "",
    max_tokens: int = 0,
    temperature: float = 0.0,
    top_p: float = 0.0,
    stop: Sequence[str] = (),
    seed: int | None = None,
    few_shot: Sequence[tuple[str, str]] = (),
    collection: str = "",
    top_k: int = 0,
    filters: dict[str, str | Sequence[str]] | None = None,
    min_score: float | None = None,
    hybrid: bool = False,
    abstain: str = "off",
    grounded_threshold: float | None = None,
    abstain_threshold: float | None = None,
) -> pb.GenerationInput:
    """Builds the request message; `filters` maps a metadata key to a value or a list of them.

    `abstain` ("off", "refuse" or "quote", with `collection`) asks the service to cut
    unsupported claims and, when none is supported, to answer "The sources do not say."
    (or quote the passage closest to the question); see docs/grounding.md.
    `grounded_threshold` (0-1) is the grounding score an answer needs to be flagged
    grounded; unset, the tenant's default (the service's is 0.7). Under "refuse" and
    "quote" nothing scoring below `abstain_threshold` is served (service default 0.2).
    """
    if abstain not in ABSTAIN_POLICIES:
        raise ValueError(f"abstain must be one of {', '.join(ABSTAIN_POLICIES)}")
    sampling = pb.SamplingParams(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=list(stop)
    )
    if seed is not None:
        sampling.seed = seed
    spec = pb.GenerationInput(
        adapter=adapter,
        prompt=prompt,
        messages=[pb.ChatMessage(role=r, content=c) for r, c in messages],
        few_shot=[pb.FewShotExample(input=i, output=o) for i, o in few_shot],
        sampling=sampling,
    )
    if collection:
        spec.rag.CopyFrom(
            pb.RagOptions(
                collection=collection,
                top_k=top_k,
                min_score=min_score,
                hybrid=hybrid,
                abstain=ABSTAIN_POLICIES[abstain],
            )
        )
        if grounded_threshold is not None:
            spec.rag.grounded_threshold = grounded_threshold
        if abstain_threshold is not None:
            spec.rag.abstain_threshold = abstain_threshold
        for key, value in (filters or {}).items():
            condition = spec.rag.filter.conditions.add(key=key)
            if isinstance(value, str):
                condition.equals = value
            else:
                getattr(condition, "in").values.extend(value)  # `in` is a keyword
    return spec


class InferenceClient(BaseClient):
    service = "inference"

    @property
    def stub(self) -> pb_grpc.InferenceServiceStub:
        return pb_grpc.InferenceServiceStub(self.channel)

    def generate(
        self, prompt: str = "", *, timeout: float | None = 300, **options
    ) -> pb.GenerationResult:
        """One whole answer; options are those of `generation_input`.

        With RAG the result's `text` is checked: `grounding_score` (support and relevance,
        calibrated) against `grounded_threshold` gives `grounded`; `refusal_reason`, each
        citation's `support`/`supported`/`dropped`, the model's own `generated_text`, and
        `checked_text`/`checked_score` (its checked answer before an abstain policy).
        """
        request = pb.GenerateTextRequest(input=generation_input(prompt, **options))
        return self._call(self.stub.GenerateText, request, timeout).result

    def stream(
        self, prompt: str = "", *, timeout: float | None = 300, **options
    ) -> Iterator[str | pb.GenerationResult]:
        """Yields text deltas as generated (unchecked), then the final, checked result."""
        spec = generation_input(prompt, **options)
        for message in self._stream(
            self.stub.StreamGenerateText, pb.StreamGenerateTextRequest(input=spec), timeout
        ):
            yield message.result if message.HasField("result") else message.delta

    def loaded_adapters(self) -> list[str]:
        reply = self._call(self.stub.ListLoadedAdapters, pb.ListLoadedAdaptersRequest())
        return [a.adapter_ref for a in reply.adapters]
