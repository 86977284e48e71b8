"""gRPC edge of inference: protobuf in, core call, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from loraplex.inference.v1 import inference_service_pb2 as pb
from loraplex.inference.v1 import inference_service_pb2_grpc as pb_grpc
from services.common.context import current_tenant
from services.common.errors import Unavailable
from services.common.kit import Servicer
from services.inference import convert
from services.inference.generation import GenerationResult, InferenceCore


class InferenceServicer(pb_grpc.InferenceServiceServicer, Servicer[InferenceCore]):
    """Registered before the engine is up; the kit's readiness gate holds calls until then."""

    async def GenerateText(
        self, request: pb.GenerateTextRequest, context
    ) -> pb.GenerateTextResponse:
        spec = convert.generation_request(request.input)
        async for item in self.core.generate(current_tenant(), spec):
            if isinstance(item, GenerationResult):
                return pb.GenerateTextResponse(result=convert.result(item))
        raise Unavailable("generation ended without a result")

    async def StreamGenerateText(
        self, request: pb.StreamGenerateTextRequest, context
    ) -> AsyncIterator[pb.StreamGenerateTextResponse]:
        spec = convert.generation_request(request.input)
        async for item in self.core.generate(current_tenant(), spec):
            if isinstance(item, GenerationResult):
                yield pb.StreamGenerateTextResponse(result=convert.result(item))
            else:
                yield pb.StreamGenerateTextResponse(delta=item)

    async def ListLoadedAdapters(
        self, request: pb.ListLoadedAdaptersRequest, context
    ) -> pb.ListLoadedAdaptersResponse:
        names = self.core.adapters.loaded(current_tenant())
        return pb.ListLoadedAdaptersResponse(
            adapters=[pb.LoadedAdapter(adapter_ref=n) for n in names]
        )
