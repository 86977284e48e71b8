"""Protobuf ↔ registry records. Translation only."""

from __future__ import annotations

from loraplex.registry.v1 import registry_service_pb2 as pb
from services.common.timestamps import timestamp
from services.registry.records import (
    AdapterSummary,
    AliasRecord,
    EventRecord,
    FileRecord,
    VersionRecord,
)
from services.registry.registry import PushFormat, PushHeader, Requirements


def requirements(
    request: pb.CheckCompatibilityRequest | pb.DownloadAdapterRequest,
) -> Requirements:
    return Requirements(
        base_model=request.base_model,
        max_rank=request.max_rank,
        available_modules=list(request.available_modules),
        supported_peft_types=list(request.supported_peft_types),
    )


def push_header(header: pb.PushHeader) -> PushHeader:
    return PushHeader(
        name=header.name,
        files=[FileRecord(f.path, f.size_bytes, f.sha256) for f in header.files],
        format=PushFormat.TAR if header.format == pb.PUSH_FORMAT_TAR else PushFormat.FILES,
        lineage=dict(header.lineage),
        metrics=dict(header.metrics),
        expect_base_model=header.expect_base_model,
        max_rank=header.max_rank,
        aliases=list(header.aliases),
        description=header.description,
    )


def version(record: VersionRecord) -> pb.AdapterVersion:
    peft = record.peft
    return pb.AdapterVersion(
        name=str(record.name),
        version=record.version,
        digest=record.digest,
        size_bytes=record.size_bytes,
        peft=pb.PeftConfig(
            peft_type=peft.peft_type,
            base_model=peft.base_model,
            rank=peft.rank,
            alpha=peft.alpha,
            target_modules=list(peft.target_modules),
            task_type=peft.task_type,
            target_modules_is_regex=peft.target_modules_is_regex,
        ),
        lineage=record.lineage,
        metrics=record.metrics,
        aliases=list(record.aliases),
        files=[
            pb.FileInfo(path=f.path, size_bytes=f.size_bytes, sha256=f.sha256) for f in record.files
        ],
        created_at=timestamp(record.created_at),
        description=record.description,
    )


def summary(record: AdapterSummary) -> pb.AdapterSummary:
    return pb.AdapterSummary(
        name=str(record.name),
        latest=version(record.latest),
        version_count=record.version_count,
        aliases=record.aliases,
    )


def alias(record: AliasRecord) -> pb.AliasState:
    return pb.AliasState(
        name=str(record.name),
        alias=record.alias,
        version=record.version,
        staged_version=record.staged_version,
        effective_at=timestamp(record.effective_at),
    )


def event(record: EventRecord) -> pb.WatchAdaptersResponse:
    return pb.WatchAdaptersResponse(
        sequence=record.sequence,
        kind=int(record.kind),
        name=str(record.name),
        version=record.version,
        alias=record.alias,
        previous_version=record.previous_version,
        effective_at=timestamp(record.effective_at),
        occurred_at=timestamp(record.occurred_at),
    )
