"""SQLite (or PostgreSQL) source of truth: collections, documents, chunks with vector blobs.

Every acknowledged write is one committed transaction here; FAISS indexes are
derived from these rows and can always be rebuilt from them. Every lookup takes
the tenant, so no query can reach another tenant's rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import numpy as np
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
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
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from services.common.db import write_transaction
from services.common.errors import AlreadyExists, NotFound, ResourceExhausted
from services.common.leases import now
from services.common.migrations import Schema, upgrade
from services.retrieval.records import (
    ChunkHit,
    CollectionRecord,
    Condition,
    IndexKind,
    PreparedDocument,
    WriteResult,
)

metadata_obj = MetaData()
#: Alembic revisions of these tables (services/retrieval/migrations).
SCHEMA = Schema("retrieval", Path(__file__).with_name("migrations"), marker_table="collections")
# AUTOINCREMENT: chunk ids are FAISS ids and must never be reused after a delete.
collections = Table(
    "collections",
    metadata_obj,
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
documents = Table(
    "documents",
    metadata_obj,
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
doc_metadata = Table(
    "doc_metadata",
    metadata_obj,
    Column("document_id", ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
    Column("collection_id", Integer, nullable=False),
    Column("key", String(255), nullable=False),
    Column("value", Text, nullable=False),
    Index("ix_doc_metadata_lookup", "collection_id", "key", "value"),
    Index("ix_doc_metadata_document", "document_id"),
)
chunks = Table(
    "chunks",
    metadata_obj,
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

#: The newest index snapshot of each collection in the blob store (object key, revision).
index_snapshots = Table(
    "index_snapshots",
    metadata_obj,
    Column(
        "collection_id",
        ForeignKey("collections.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("revision", Integer, nullable=False),
    Column("object_key", String(255), nullable=False),
)
#: Membership: each live replica renews its row's lease; placement hashes over the live set.
replicas = Table(
    "replicas",
    metadata_obj,
    Column("id", String(255), primary_key=True),
    Column("address", String(255), nullable=False),
    Column("expires_at", Float, nullable=False),
)

_IN_BATCH = 5000


def _batches(ids: np.ndarray) -> Iterator[list[int]]:
    for start in range(0, len(ids), _IN_BATCH):
        yield [int(i) for i in ids[start : start + _IN_BATCH]]


def _insert(conn: Connection, table: Table, rows: list[dict]) -> None:
    """Inserts `rows` (dicts with the same keys) inside `conn`'s transaction: by COPY on
    PostgreSQL, whose driver spends most of a multi-row INSERT parsing its thousands of
    parameters; elsewhere one batched INSERT."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), rows)
        return
    columns = list(rows[0])
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor:  # type: ignore[union-attr]
        sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        with cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])


def _record(row: object) -> CollectionRecord:
    m = row._mapping  # type: ignore[attr-defined]
    created = m["created_at"]
    return CollectionRecord(
        pk=m["id"],
        tenant=m["tenant"],
        name=m["name"],
        embedding_model=m["embedding_model"],
        dimension=m["dimension"],
        index_kind=IndexKind(m["index_kind"]),
        chunk_size=m["chunk_size"],
        chunk_overlap=m["chunk_overlap"],
        created_at=created if created.tzinfo else created.replace(tzinfo=UTC),
        revision=m["revision"],
    )


def _matching_documents(pk: int, conditions: list[Condition]):  # type: ignore[no-untyped-def]
    """Document ids of collection `pk` satisfying every condition (AND of key IN values)."""
    query = select(documents.c.id).where(documents.c.collection_id == pk)
    for cond in conditions:
        query = query.where(
            documents.c.id.in_(
                select(doc_metadata.c.document_id).where(
                    doc_metadata.c.collection_id == pk,
                    doc_metadata.c.key == cond.key,
                    doc_metadata.c.value.in_(cond.values),
                )
            )
        )
    return query


class RetrievalStore:
    """Synchronous data access; the manager calls it from its executor."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        upgrade(engine, SCHEMA)

    # Collections -------------------------------------------------------------------------

    def create_collection(self, record: CollectionRecord, max_per_tenant: int) -> CollectionRecord:
        with self.engine.begin() as conn:
            count = conn.scalar(select(func.count()).where(collections.c.tenant == record.tenant))
            if count >= max_per_tenant:
                raise ResourceExhausted(
                    f"tenant already has {count} collections, the limit is {max_per_tenant}"
                )
            try:
                pk = conn.execute(
                    insert(collections).values(
                        tenant=record.tenant,
                        name=record.name,
                        embedding_model=record.embedding_model,
                        dimension=record.dimension,
                        index_kind=record.index_kind.value,
                        chunk_size=record.chunk_size,
                        chunk_overlap=record.chunk_overlap,
                        created_at=record.created_at,
                        revision=0,
                    )
                ).inserted_primary_key[0]
            except IntegrityError:
                raise AlreadyExists(f"collection {record.name!r} already exists") from None
        return self.get_collection(record.tenant, record.name, pk=pk)

    def get_collection(self, tenant: str, name: str, pk: int | None = None) -> CollectionRecord:
        query = select(collections).where(collections.c.tenant == tenant)
        query = query.where(collections.c.id == pk) if pk else query
        query = query.where(collections.c.name == name)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"collection {name!r} not found")
        return _record(row)

    def list_collections(self, tenant: str, after: str, limit: int) -> list[CollectionRecord]:
        query = (
            select(collections)
            .where(collections.c.tenant == tenant, collections.c.name > after)
            .order_by(collections.c.name)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def collection_pks(self, among: list[int] | None = None) -> set[int]:
        """Ids of existing collections (only those `among` the given ones, if given)."""
        query = select(collections.c.id)
        if among is not None:
            query = query.where(collections.c.id.in_(among))
        with self.engine.connect() as conn:
            return set(conn.scalars(query))

    def delete_collection(self, tenant: str, name: str) -> int:
        with self.engine.begin() as conn:
            pk = conn.scalar(
                select(collections.c.id).where(
                    collections.c.tenant == tenant, collections.c.name == name
                )
            )
            if pk is None:
                raise NotFound(f"collection {name!r} not found")
            conn.execute(delete(collections).where(collections.c.id == pk))
        return int(pk)

    # Writes ------------------------------------------------------------------------------

    def _bump(self, conn: Connection, pk: int, name: str) -> int:
        revision = conn.scalar(
            update(collections)
            .where(collections.c.id == pk)
            .values(revision=collections.c.revision + 1)
            .returning(collections.c.revision)
        )
        if revision is None:
            raise NotFound(f"collection {name!r} not found")
        return int(revision)

    @staticmethod
    def _insert_returning(conn: Connection, table: Table, rows: list[dict]) -> list[int]:
        """Inserts `rows` in one go; returns their new ids in the order of `rows`.

        On PostgreSQL the ids come from the table's own sequence (unique, never reused,
        increasing in this call) and the rows go in by `_insert`'s COPY. Elsewhere it is
        SQLAlchemy's batched INSERT .. RETURNING (insertmanyvalues).
        """
        if not rows:
            return []
        if conn.dialect.name != "postgresql":
            stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
            return list(conn.execute(stmt, rows).scalars())
        ids = sorted(
            conn.scalars(
                text(
                    "SELECT nextval(pg_get_serial_sequence(:table, 'id'))"
                    " FROM generate_series(1, :n)"
                ),
                {"table": table.name, "n": len(rows)},
            )
        )
        _insert(conn, table, [{"id": i, **row} for i, row in zip(ids, rows, strict=True)])
        return ids

    def _delete_docs(self, conn: Connection, doc_pks: list[int]) -> np.ndarray:
        """Deletes documents (chunks and metadata cascade); returns their chunk ids."""
        if not doc_pks:
            return np.zeros(0, dtype=np.int64)
        removed = conn.scalars(select(chunks.c.id).where(chunks.c.document_id.in_(doc_pks)))
        ids = np.fromiter(removed, dtype=np.int64)
        conn.execute(delete(documents).where(documents.c.id.in_(doc_pks)))
        return ids

    def write_documents(
        self, record: CollectionRecord, prepared: list[PreparedDocument]
    ) -> WriteResult:
        """Replaces each document by id, atomically for the whole batch.

        One multi-row statement per table for the whole batch, not one per document: a
        round trip per row capped PostgreSQL at about a thousand rows a second.
        """
        with self.engine.begin() as conn:
            revision = self._bump(conn, record.pk, record.name)
            doc_ids = [p.doc.doc_id for p in prepared]
            old = list(
                conn.scalars(
                    select(documents.c.id).where(
                        documents.c.collection_id == record.pk, documents.c.doc_id.in_(doc_ids)
                    )
                )
            )
            removed = self._delete_docs(conn, old)
            doc_pks = self._insert_returning(
                conn,
                documents,
                [
                    {
                        "collection_id": record.pk,
                        "doc_id": p.doc.doc_id,
                        "metadata_json": json.dumps(p.doc.metadata, sort_keys=True),
                        "source_uri": p.doc.source_uri,
                        "source_title": p.doc.source_title,
                        "revision": revision,
                    }
                    for p in prepared
                ],
            )
            pairs = list(zip(doc_pks, prepared, strict=True))
            labels = [
                {"document_id": doc_pk, "collection_id": record.pk, "key": k, "value": v}
                for doc_pk, p in pairs
                for k, v in p.doc.metadata.items()
            ]
            _insert(conn, doc_metadata, labels)
            added_ids = self._insert_returning(
                conn,
                chunks,
                [
                    {
                        "collection_id": record.pk,
                        "document_id": doc_pk,
                        "chunk_index": chunk.index,
                        "text": chunk.text,
                        "start_char": chunk.start_char,
                        "end_char": chunk.end_char,
                        "vector": p.vectors[i].tobytes(),
                        "revision": revision,
                    }
                    for doc_pk, p in pairs
                    for i, chunk in enumerate(p.chunks)
                ],
            )
        vectors = [p.vectors for p in prepared if len(p.chunks)]
        return WriteResult(
            revision=revision,
            documents=len(prepared),
            added_ids=np.asarray(added_ids, dtype=np.int64),
            added_vectors=np.vstack(vectors) if vectors else np.zeros((0, record.dimension)),
            removed_ids=removed,
        )

    def delete_documents(
        self, record: CollectionRecord, doc_ids: list[str], conditions: list[Condition]
    ) -> WriteResult:
        """Deletes by ids, or by filter; the revision moves only if something was deleted."""
        with self.engine.begin() as conn:
            if doc_ids:
                query = select(documents.c.id).where(
                    documents.c.collection_id == record.pk, documents.c.doc_id.in_(doc_ids)
                )
            else:
                query = _matching_documents(record.pk, conditions)
            doc_pks = list(conn.scalars(query))
            if doc_pks:
                revision = self._bump(conn, record.pk, record.name)
                removed = self._delete_docs(conn, doc_pks)
            else:
                revision = conn.scalar(
                    select(collections.c.revision).where(collections.c.id == record.pk)
                )
                if revision is None:
                    raise NotFound(f"collection {record.name!r} not found")
                removed = np.zeros(0, dtype=np.int64)
        empty = np.zeros((0, record.dimension), dtype=np.float32)
        return WriteResult(int(revision), len(doc_pks), np.zeros(0, np.int64), empty, removed)

    # Reads -------------------------------------------------------------------------------

    def revision(self, pk: int) -> int | None:
        """The collection's committed revision; None once it is deleted."""
        with self.engine.connect() as conn:
            return conn.scalar(select(collections.c.revision).where(collections.c.id == pk))

    # Snapshots ---------------------------------------------------------------------------

    def snapshot(self, pk: int) -> tuple[int, str] | None:
        """(revision, object key) of the collection's newest snapshot, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(index_snapshots.c.revision, index_snapshots.c.object_key).where(
                    index_snapshots.c.collection_id == pk
                )
            ).first()
        return (int(row[0]), str(row[1])) if row else None

    def record_snapshot(self, pk: int, revision: int, key: str) -> str | None:
        """Points the collection at a newer snapshot; returns the key it replaces (to
        delete), or `key` itself when a newer one is already recorded or the collection
        is gone (then the caller deletes what it just wrote). The same revision already
        recorded returns None: two loads of one collection unloading at the same
        revision write the same key, and the second must not delete the object the
        record names."""
        with write_transaction(self.engine) as conn:
            if conn.scalar(select(collections.c.id).where(collections.c.id == pk)) is None:
                return key
            row = conn.execute(
                select(index_snapshots.c.revision, index_snapshots.c.object_key)
                .where(index_snapshots.c.collection_id == pk)
                .with_for_update()
            ).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(index_snapshots).values(
                                collection_id=pk, revision=revision, object_key=key
                            )
                        )
                except IntegrityError:  # the collection was deleted meanwhile
                    return key
                return None
            if row[0] == revision and row[1] == key:
                return None
            if row[0] >= revision:
                return key
            conn.execute(
                update(index_snapshots)
                .where(index_snapshots.c.collection_id == pk)
                .values(revision=revision, object_key=key)
            )
            return str(row[1])

    # Membership --------------------------------------------------------------------------

    def heartbeat(self, replica: str, address: str, seconds: float) -> list[tuple[str, str]]:
        """Renews `replica`'s lease; returns every live replica (id, address), by id."""
        with write_transaction(self.engine) as conn:
            moment = now(conn)
            renewed = conn.execute(
                update(replicas)
                .where(replicas.c.id == replica)
                .values(address=address, expires_at=moment + seconds)
            ).rowcount
            if not renewed:
                conn.execute(
                    insert(replicas).values(
                        id=replica, address=address, expires_at=moment + seconds
                    )
                )
            conn.execute(delete(replicas).where(replicas.c.expires_at < moment - 3600))
            rows = conn.execute(
                select(replicas.c.id, replicas.c.address)
                .where(replicas.c.expires_at > moment)
                .order_by(replicas.c.id)
            ).all()
        return [(str(r[0]), str(r[1])) for r in rows]

    def leave(self, replica: str) -> None:
        """Drops `replica`'s lease at once (a clean shutdown hands its tenants over)."""
        with write_transaction(self.engine) as conn:
            conn.execute(delete(replicas).where(replicas.c.id == replica))

    def chunk_ids(self, pk: int, conditions: list[Condition] | None = None) -> np.ndarray:
        """Live chunk ids, optionally only those of documents matching the filter."""
        query = select(chunks.c.id).where(chunks.c.collection_id == pk)
        if conditions:
            query = query.where(chunks.c.document_id.in_(_matching_documents(pk, conditions)))
        with self.engine.connect() as conn:
            return np.fromiter(conn.scalars(query.order_by(chunks.c.id)), dtype=np.int64)

    def vectors(
        self, pk: int, ids: np.ndarray | None, dimension: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) for the given chunk ids, or for every chunk when `ids` is None."""
        out_ids: list[int] = []
        blobs: list[bytes] = []
        with self.engine.connect() as conn:
            base = select(chunks.c.id, chunks.c.vector).where(chunks.c.collection_id == pk)
            queries = (
                [base.order_by(chunks.c.id)]
                if ids is None
                else [base.where(chunks.c.id.in_(batch)) for batch in _batches(ids)]
            )
            for query in queries:
                for chunk_id, blob in conn.execute(query):
                    out_ids.append(chunk_id)
                    blobs.append(blob)
        matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dimension)
        return np.asarray(out_ids, dtype=np.int64), matrix

    def texts(self, pk: int) -> tuple[np.ndarray, list[str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(chunks.c.id, chunks.c.text)
                .where(chunks.c.collection_id == pk)
                .order_by(chunks.c.id)
            ).all()
        return np.asarray([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def hydrate(self, pk: int, ids: list[int]) -> dict[int, ChunkHit]:
        """Chunk rows with their document's id, metadata and source; deleted ids are absent."""
        query = (
            select(
                chunks.c.id,
                documents.c.doc_id,
                chunks.c.chunk_index,
                chunks.c.text,
                chunks.c.start_char,
                chunks.c.end_char,
                documents.c.metadata_json,
                documents.c.source_uri,
                documents.c.source_title,
            )
            .join(documents, documents.c.id == chunks.c.document_id)
            .where(chunks.c.collection_id == pk, chunks.c.id.in_(ids))
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {
            r[0]: ChunkHit(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8])
            for r in rows
        }

    def counts(self, pk: int) -> tuple[int, int, int]:
        """(documents, chunks, bytes of chunk text and vectors) of one collection."""
        with self.engine.connect() as conn:
            docs = conn.scalar(select(func.count()).where(documents.c.collection_id == pk))
            n, size = conn.execute(
                select(
                    func.count(),
                    func.coalesce(
                        func.sum(func.length(chunks.c.text) + func.length(chunks.c.vector)), 0
                    ),
                ).where(chunks.c.collection_id == pk)
            ).one()
        return int(docs or 0), int(n), int(size)
