"""Registry client: push, pull (verified), list, alias, delete, check, watch."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from loraplex.adapter_transfer import (
    IntegrityError,
    VerifiedFolder,
    adapter_files,
    push_chunks,
    push_header,
    sha256_file,
)
from loraplex.client.base import BaseClient, LoraplexClientError
from loraplex.registry.v1 import registry_service_pb2 as pb
from loraplex.registry.v1 import registry_service_pb2_grpc as pb_grpc

__all__ = ["Progress", "RegistryClient", "sha256_file"]

#: Called with (bytes done, bytes total) as a transfer progresses.
Progress = Callable[[int, int], None]


class RegistryClient(BaseClient):
    service = "registry"

    @property
    def stub(self) -> pb_grpc.RegistryServiceStub:
        return pb_grpc.RegistryServiceStub(self.channel)

    def push(
        self,
        name: str,
        source: Path | str,
        *,
        lineage: dict[str, str] | None = None,
        metrics: dict[str, float] | None = None,
        aliases: list[str] | None = None,
        description: str = "",
        expect_base_model: str = "",
        max_rank: int = 0,
        progress: Progress | None = None,
        timeout: float | None = 600,
    ) -> pb.AdapterVersion:
        """Uploads a PEFT folder (or a .tar/.tar.gz of one) as the next version of `name`."""
        source = Path(source)
        files = adapter_files(source)
        header = push_header(
            name,
            source,
            files,
            lineage=lineage,
            metrics=metrics,
            aliases=aliases or (),
            description=description,
            expect_base_model=expect_base_model,
            max_rank=max_rank,
        )
        total = sum(m.size_bytes for m in header.files)

        def requests() -> Iterator[pb.PushAdapterRequest]:
            yield pb.PushAdapterRequest(header=header)
            done = 0
            for request in push_chunks(files):
                yield request
                done += len(request.chunk.data)
                if progress:
                    progress(done, total)

        response = self._call(self.stub.PushAdapter, requests(), timeout)
        return response.version

    def get(self, ref: str) -> pb.AdapterVersion:
        return self._call(self.stub.GetAdapter, pb.GetAdapterRequest(ref=ref)).version

    def list(self, base_model: str = "", page_size: int = 100) -> Iterator[pb.AdapterSummary]:
        request = pb.ListAdaptersRequest(page_size=page_size, base_model=base_model)
        return self._paged(self.stub.ListAdapters, request, "adapters")

    def list_versions(self, name: str, page_size: int = 100) -> Iterator[pb.AdapterVersion]:
        request = pb.ListAdapterVersionsRequest(name=name, page_size=page_size)
        return self._paged(self.stub.ListAdapterVersions, request, "versions")

    def pull(
        self,
        ref: str,
        dest: Path | str,
        progress: Progress | None = None,
        timeout: float | None = 600,
    ) -> pb.AdapterVersion:
        """Downloads into `dest` (created); every file is checked against its sha256 first."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            version = self._download(ref, staging, progress, timeout)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)
            return version
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _download(
        self, ref: str, staging: Path, progress: Progress | None, timeout: float | None
    ) -> pb.AdapterVersion:
        stream = self._stream(
            self.stub.DownloadAdapter, pb.DownloadAdapterRequest(ref=ref), timeout or 0
        )
        first = next(stream, None)
        if first is None or not first.HasField("version"):
            raise LoraplexClientError.protocol("download did not start with the version")
        files = VerifiedFolder(first.version, staging)
        try:
            for message in stream:
                files.write(message.chunk.path, message.chunk.data)
                if progress:
                    progress(files.done, files.total)
            files.finish()
        except IntegrityError as error:
            raise LoraplexClientError.protocol(str(error)) from None
        return first.version

    def set_alias(
        self, name: str, alias: str, version: int, stage_seconds: int = 0
    ) -> pb.AliasState:
        request = pb.SetAliasRequest(
            name=name, alias=alias, version=version, stage_seconds=stage_seconds
        )
        return self._call(self.stub.SetAlias, request).alias

    def delete_alias(self, name: str, alias: str) -> None:
        self._call(self.stub.DeleteAlias, pb.DeleteAliasRequest(name=name, alias=alias))

    def delete(self, name: str, version: int = 0, force: bool = False) -> list[int]:
        request = pb.DeleteAdapterRequest(name=name, version=version, force=force)
        return list(self._call(self.stub.DeleteAdapter, request).deleted_versions)

    def check_compatibility(
        self,
        ref: str,
        base_model: str = "",
        max_rank: int = 0,
        available_modules: list[str] | None = None,
        supported_peft_types: list[str] | None = None,
    ) -> pb.AdapterVersion:
        request = pb.CheckCompatibilityRequest(
            ref=ref,
            base_model=base_model,
            max_rank=max_rank,
            available_modules=available_modules or [],
            supported_peft_types=supported_peft_types or [],
        )
        return self._call(self.stub.CheckCompatibility, request).version

    def watch(
        self, name: str = "", after_sequence: int = 0, include_current: bool = False
    ) -> Iterator[pb.WatchAdaptersResponse]:
        request = pb.WatchAdaptersRequest(
            name=name, after_sequence=after_sequence, include_current=include_current
        )
        return self._stream(self.stub.WatchAdapters, request, timeout=0)
