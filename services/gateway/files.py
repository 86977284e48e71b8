"""`/v1/files`: a fine-tune file becomes a training dataset (validated there, row by row);
any other file is kept here as UTF-8 text until a vector store takes it."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Form, UploadFile
from fastapi.responses import JSONResponse, Response

from services.common.context import current_tenant
from services.common.errors import InvalidArgument
from services.common.kit import Blocking
from services.gateway import convert
from services.gateway.store import FileRecord, GatewayStore, new_file_id
from services.gateway.upstream import TrainingUpstream

FINE_TUNE = "fine-tune"
#: Purposes stored for vector stores; the others OpenAI knows (batch, vision) are refused.
TEXT_PURPOSES = ("assistants", "user_data")
MAX_LIMIT = 10_000


def list_args(limit: int, order: str) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument(f"limit must be between 1 and {MAX_LIMIT}")
    if order not in ("asc", "desc"):
        raise InvalidArgument("order must be 'asc' or 'desc'")


class FileRoutes:
    def __init__(
        self,
        store: GatewayStore,
        training: TrainingUpstream,
        blocking: Blocking,
        max_file_bytes: int,
    ) -> None:
        self.store = store
        self.training = training
        self.blocking = blocking
        self.max_file_bytes = max_file_bytes
        self.router = APIRouter(prefix="/v1/files")
        self.router.add_api_route("", self.upload, methods=["POST"])
        self.router.add_api_route("", self.list, methods=["GET"])
        self.router.add_api_route("/{file_id}", self.get, methods=["GET"])
        self.router.add_api_route("/{file_id}", self.delete, methods=["DELETE"])
        self.router.add_api_route("/{file_id}/content", self.content, methods=["GET"])

    async def upload(self, file: UploadFile, purpose: str = Form(...)) -> JSONResponse:
        tenant = current_tenant()
        if purpose != FINE_TUNE and purpose not in TEXT_PURPOSES:
            raise InvalidArgument(
                f"purpose {purpose[:40]!r} is not supported; use 'fine-tune' for training data"
                " or 'assistants' / 'user_data' for vector stores"
            )
        data = await file.read(self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:
            raise InvalidArgument(f"the file is larger than {self.max_file_bytes} bytes")
        if not data:
            raise InvalidArgument("the file is empty")
        filename = (file.filename or "upload").rsplit("/", 1)[-1][:256]
        if any(ord(c) < 32 or c in "\u202e\u202d\u2066\u2067\u2068" for c in filename):
            raise InvalidArgument("the file name holds control or direction characters")
        record = FileRecord(new_file_id(), tenant, purpose, filename, len(data), time.time())
        if purpose == FINE_TUNE:
            dataset = await self.training.upload(tenant, record.id, data)
            record = FileRecord(**{**record.__dict__, "dataset_id": dataset.id})
            await self.blocking(self.store.add_file, record, None)
        else:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgument("only UTF-8 text files are supported") from None
            await self.blocking(self.store.add_file, record, data)
        return JSONResponse(convert.file_object(record))

    async def list(
        self, purpose: str = "", limit: int = 10_000, order: str = "desc", after: str = ""
    ) -> JSONResponse:
        list_args(limit, order)
        records = await self.blocking(
            self.store.list_files, current_tenant(), purpose, after, limit + 1, order == "desc"
        )
        data = [convert.file_object(r) for r in records[:limit]]
        return JSONResponse(convert.page(data, len(records) > limit))

    async def get(self, file_id: str) -> JSONResponse:
        record = await self.blocking(self.store.get_file, current_tenant(), file_id)
        return JSONResponse(convert.file_object(record))

    async def delete(self, file_id: str) -> JSONResponse:
        await self.blocking(self.store.delete_file, current_tenant(), file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    async def content(self, file_id: str) -> Response:
        content = await self.blocking(self.store.file_content, current_tenant(), file_id)
        if content is None:
            raise InvalidArgument(
                "a fine-tune file's rows live in training; its content is not kept here"
            )
        return Response(content, media_type="text/plain; charset=utf-8")


def file_text(store: GatewayStore, tenant: str, file_id: str) -> tuple[FileRecord, str]:
    """Blocking: a stored text file and its text, for a vector store to take."""
    record = store.get_file(tenant, file_id)
    content = store.file_content(tenant, file_id)
    if content is None:
        raise InvalidArgument(
            f"file {file_id} has purpose {record.purpose!r}; upload it with purpose"
            " 'assistants' to add it to a vector store"
        )
    return record, content.decode("utf-8")


def deleted(kind: str, key: str) -> dict[str, Any]:
    return {"id": key, "object": kind, "deleted": True}
