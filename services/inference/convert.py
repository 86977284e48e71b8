"""Protobuf ↔ inference core types. Translation only."""

from __future__ import annotations

from loraplex.inference.v1 import inference_service_pb2 as pb
from loraplex.retrieval.v1 import retrieval_service_pb2 as ret_pb
from services.common.adapter_ref import parse_ref
from services.common.errors import InvalidArgument
from services.inference.generation import GenerationRequest, GenerationResult, RagRequest
from services.inference.grounding import AbstainPolicy, Refusal
from services.inference.records import MetadataCondition, MetadataFilter

ABSTAIN_FROM_PB = {
    pb.ABSTAIN_POLICY_UNSPECIFIED: AbstainPolicy.OFF,
    pb.ABSTAIN_POLICY_REFUSE: AbstainPolicy.REFUSE,
    pb.ABSTAIN_POLICY_QUOTE: AbstainPolicy.QUOTE,
}
REFUSAL_TO_PB = {
    Refusal.NONE: pb.REFUSAL_REASON_UNSPECIFIED,
    Refusal.MODEL_DECLINED: pb.REFUSAL_REASON_MODEL_DECLINED,
    Refusal.NOT_SUPPORTED: pb.REFUSAL_REASON_NOT_SUPPORTED,
    Refusal.NO_SOURCES: pb.REFUSAL_REASON_NO_SOURCES,
}


def generation_request(spec: pb.GenerationInput) -> GenerationRequest:
    """The adapter reference is parsed here, once, with the registry's grammar."""
    sampling = spec.sampling
    rag = None
    if spec.rag.collection:
        rag = RagRequest(
            collection=spec.rag.collection,
            top_k=spec.rag.top_k,
            filter=metadata_filter(spec.rag.filter) if spec.rag.HasField("filter") else None,
            min_score=spec.rag.min_score if spec.rag.HasField("min_score") else None,
            hybrid=spec.rag.hybrid,
            max_context_tokens=spec.rag.max_context_tokens,
            abstain=_abstain(spec.rag.abstain),
            grounded_threshold=_threshold(spec.rag, "grounded_threshold"),
            abstain_threshold=_threshold(spec.rag, "abstain_threshold"),
        )
    return GenerationRequest(
        adapter=parse_ref(spec.adapter) if spec.adapter else None,
        prompt=spec.prompt,
        messages=[(m.role, m.content) for m in spec.messages],
        few_shot=[(e.input, e.output) for e in spec.few_shot],
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        stop=list(sampling.stop),
        seed=sampling.seed if sampling.HasField("seed") else None,
        repetition_penalty=sampling.repetition_penalty,
        rag=rag,
        use_chat_template=spec.use_chat_template if spec.HasField("use_chat_template") else None,
    )


def metadata_filter(message: ret_pb.MetadataFilter) -> MetadataFilter:
    """`equals` and `in` both become a tuple of allowed values; neither, an empty one
    (retrieval refuses it, naming the condition)."""
    conditions = []
    for cond in message.conditions:
        which = cond.WhichOneof("match")
        values = (
            (cond.equals,)
            if which == "equals"
            else tuple(getattr(cond, "in").values)
            if which == "in"
            else ()
        )
        conditions.append(MetadataCondition(cond.key, values))
    return MetadataFilter(tuple(conditions))


def _abstain(value: int) -> AbstainPolicy:
    if value not in ABSTAIN_FROM_PB:
        raise InvalidArgument("rag.abstain must be UNSPECIFIED, REFUSE or QUOTE")
    return ABSTAIN_FROM_PB[value]


def _threshold(rag: pb.RagOptions, name: str) -> float | None:
    if not rag.HasField(name):
        return None
    value = getattr(rag, name)
    if not 0 <= value <= 1:  # NaN fails too
        raise InvalidArgument(f"rag.{name} must be between 0 and 1, got {value}")
    return value


def result(record: GenerationResult) -> pb.GenerationResult:
    return pb.GenerationResult(
        text=record.text,
        finish_reason=record.finish_reason,
        usage=pb.Usage(
            prompt_tokens=record.prompt_tokens, completion_tokens=record.completion_tokens
        ),
        citations=[
            pb.Citation(
                number=c.number,
                cited=c.cited,
                document_id=c.chunk.document_id,
                chunk_index=c.chunk.chunk_index,
                start_char=c.chunk.start_char,
                end_char=c.chunk.end_char,
                score=c.chunk.score,
                source=ret_pb.Source(uri=c.chunk.source_uri, title=c.chunk.source_title),
                text=c.chunk.text,
                support=c.support,
                supported=c.supported,
                dropped=c.dropped,
                added=c.added,
            )
            for c in record.citations
        ],
        adapter_ref=record.adapter_ref,
        collection=record.collection,
        collection_revision=record.collection_revision,
        time_to_first_token_ms=record.time_to_first_token_ms,
        total_ms=record.total_ms,
        grounded=record.grounded,
        refusal_reason=REFUSAL_TO_PB[record.refusal],
        generated_text=record.generated_text,
        quoted=record.quoted,
        grounding_score=record.grounding_score,
        grounded_threshold=record.grounded_threshold,
        checked_text=record.checked_text,
        checked_score=record.checked_score,
        abstain_threshold=record.abstain_threshold,
    )
