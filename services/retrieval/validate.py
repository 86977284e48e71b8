"""Input checks with messages that say exactly what to fix, run before anything is written."""

from __future__ import annotations

import re

from services.common import inputs
from services.common.errors import InvalidArgument, ResourceExhausted
from services.retrieval.records import Condition, DocumentInput
from services.retrieval.settings import RetrievalSettings

# fullmatch, never `$`: `$` also matches before a trailing newline.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_DOC_ID_CHARS = 255
MAX_METADATA_KEY_CHARS = 128
MAX_CONDITIONS = 32


def collection_name(name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidArgument(
            f"collection name {name[:80]!r} is invalid: use 1-63 letters, digits, '-', '_' or '.',"
            " starting with a letter or digit, with no '..'"
        )
    return name


def _metadata(where: str, metadata: dict[str, str], settings: RetrievalSettings) -> None:
    if len(metadata) > settings.max_metadata_entries:
        raise InvalidArgument(
            f"{where} has {len(metadata)} metadata entries, at most"
            f" {settings.max_metadata_entries} are allowed"
        )
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY_CHARS or _CONTROL.search(key):
            raise InvalidArgument(
                f"{where} has an invalid metadata key {key[:40]!r}: use 1-{MAX_METADATA_KEY_CHARS}"
                " printable characters"
            )
        if len(value) > settings.max_metadata_value_chars:
            raise InvalidArgument(
                f"{where}: metadata value of {key!r} is longer than"
                f" {settings.max_metadata_value_chars} characters"
            )


def document_batch(docs: list[DocumentInput], settings: RetrievalSettings) -> None:
    """Rejects the whole batch if any document is bad, so a batch is written all or nothing."""
    if len(docs) > settings.max_documents_per_batch:
        raise ResourceExhausted(
            f"batch has {len(docs)} documents, at most {settings.max_documents_per_batch} are"
            " allowed per message: send smaller batches"
        )
    total = sum(len(d.text) for d in docs)
    if total > settings.max_batch_chars:
        raise ResourceExhausted(
            f"batch holds {total} characters of text, at most {settings.max_batch_chars} are"
            " allowed per message: send smaller batches"
        )
    seen: set[str] = set()
    for position, doc in enumerate(docs):
        inputs.check_name(doc.doc_id, f"the id of document {position}", MAX_DOC_ID_CHARS)
        where = f"document {doc.doc_id!r}"
        if doc.doc_id in seen:
            raise InvalidArgument(f"{where} appears twice in one batch")
        seen.add(doc.doc_id)
        if not doc.text.strip():
            raise InvalidArgument(f"{where} has empty text")
        if len(doc.text) > settings.max_document_chars:
            raise ResourceExhausted(
                f"{where} has {len(doc.text)} characters, the limit is"
                f" {settings.max_document_chars}: split it into several documents"
            )
        _metadata(where, doc.metadata, settings)


def document_tokens(
    doc_id: str, tokens: int, batch_tokens: int, settings: RetrievalSettings
) -> None:
    """Refuses by model tokens, which CJK text has about four times more of per character."""
    if tokens > settings.max_document_tokens:
        raise ResourceExhausted(
            f"document {doc_id!r} is longer than {settings.max_document_tokens} model tokens"
            " (Chinese or Japanese text is about one token a character, English about one per"
            " four): split it into several documents"
        )
    if batch_tokens > settings.max_batch_tokens:
        raise ResourceExhausted(
            f"batch holds more than {settings.max_batch_tokens} model tokens: send fewer"
            " documents per message"
        )


def conditions(conds: list[Condition], settings: RetrievalSettings) -> list[Condition]:
    if len(conds) > MAX_CONDITIONS:
        raise InvalidArgument(f"filter has {len(conds)} conditions, at most {MAX_CONDITIONS}")
    for position, cond in enumerate(conds):
        if not cond.key or len(cond.key) > MAX_METADATA_KEY_CHARS:
            raise InvalidArgument(f"filter condition {position} needs a metadata key")
        if not cond.values:
            raise InvalidArgument(
                f"filter condition {position} (key {cond.key!r}) needs 'equals' or a non-empty"
                " 'in' list"
            )
        if len(cond.values) > settings.max_filter_values:
            raise InvalidArgument(
                f"filter condition {position} (key {cond.key!r}) lists {len(cond.values)} values,"
                f" at most {settings.max_filter_values}"
            )
    return conds


def query(
    text: str, top_k: int, settings: RetrievalSettings, min_score: float | None = None
) -> int:
    """Checks the query and its threshold; returns the effective top_k."""
    if not text.strip():
        raise InvalidArgument("query must not be empty")
    if len(text) > settings.max_query_chars:
        raise InvalidArgument(f"query is longer than {settings.max_query_chars} characters")
    inputs.min_score(min_score)
    return inputs.top_k(top_k)
