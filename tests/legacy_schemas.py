"""The three schemas exactly as `create_all` made them before migrations (frozen here).

Databases in the field were made from these definitions; the migration tests build
such a database, fill it, and check that the services' runner recognises and upgrades
it without losing a row. Never edit these to follow the models: they are history.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

training = MetaData()
Table(
    "datasets",
    training,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("name", String(256), nullable=False),
    Column("format", String(32), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("tenant", "name"),
)
Table(
    "jobs",
    training,
    Column("id", String(40), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("spec", Text, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("step", Integer, nullable=False, default=0),
    Column("total_steps", Integer, nullable=False, default=0),
    Column("metrics", Text, nullable=False, default="{}"),
    Column("failure_reason", Text, nullable=False, default=""),
    Column("adapter_ref", String(256), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("events_offset", Integer, nullable=False, default=0),
)
Table(
    "job_events",
    training,
    Column("job_id", String(40), primary_key=True),
    Column("sequence", Integer, primary_key=True),
    Column("time", Float, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", Text, nullable=False),
)

registry = MetaData()
Table(
    "adapters",
    registry,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(63), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "name"),
)
Table(
    "versions",
    registry,
    Column("id", Integer, primary_key=True),
    Column("adapter_id", ForeignKey("adapters.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("peft_type", String(32), nullable=False),
    Column("base_model", String(512), nullable=False, index=True),
    Column("peft_config", JSON, nullable=False),
    Column("lineage", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("description", String(2048), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("adapter_id", "version"),
)
Table(
    "files",
    registry,
    Column("id", Integer, primary_key=True),
    Column("version_id", ForeignKey("versions.id", ondelete="CASCADE"), nullable=False),
    Column("path", String(255), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
)
Table(
    "aliases",
    registry,
    Column("id", Integer, primary_key=True),
    Column("adapter_id", ForeignKey("adapters.id", ondelete="CASCADE"), nullable=False),
    Column("alias", String(63), nullable=False),
    Column("version", Integer, nullable=False),
    Column("staged_version", Integer, nullable=False, default=0),
    Column("effective_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("adapter_id", "alias"),
)
Table(
    "events",
    registry,
    Column("sequence", Integer, primary_key=True, autoincrement=True),
    Column("tenant", String(63), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("kind", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("alias", String(63), nullable=False, default=""),
    Column("previous_version", Integer, nullable=False, default=0),
    Column("effective_at", DateTime(timezone=True), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
)

retrieval = MetaData()
Table(
    "collections",
    retrieval,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(63), nullable=False),
    Column("name", String(63), nullable=False),
    Column("embedding_model", String(255), nullable=False),
    Column("dimension", Integer, nullable=False),
    Column("index_kind", String(16), nullable=False),
    Column("chunk_size", Integer, nullable=False),
    Column("chunk_overlap", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revision", Integer, nullable=False, default=0),
    UniqueConstraint("tenant", "name"),
    sqlite_autoincrement=True,
)
Table(
    "documents",
    retrieval,
    Column("id", Integer, primary_key=True),
    Column("collection_id", ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
    Column("doc_id", String(255), nullable=False),
    Column("metadata_json", Text, nullable=False),
    Column("source_uri", Text, nullable=False),
    Column("source_title", Text, nullable=False),
    Column("revision", Integer, nullable=False),
    UniqueConstraint("collection_id", "doc_id"),
    sqlite_autoincrement=True,
)
Table(
    "doc_metadata",
    retrieval,
    Column("document_id", ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
    Column("collection_id", Integer, nullable=False),
    Column("key", String(255), nullable=False),
    Column("value", Text, nullable=False),
    Index("ix_doc_metadata_lookup", "collection_id", "key", "value"),
    Index("ix_doc_metadata_document", "document_id"),
)
Table(
    "chunks",
    retrieval,
    Column("id", Integer, primary_key=True),
    Column("collection_id", ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
    Column("document_id", ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
    Column("chunk_index", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("start_char", Integer, nullable=False),
    Column("end_char", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Column("revision", Integer, nullable=False),
    Index("ix_chunks_collection", "collection_id", "id"),
    Index("ix_chunks_document", "document_id"),
    sqlite_autoincrement=True,
)
