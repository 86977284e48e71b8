"""Alembic migrations of the three schemas, on SQLite and on a real PostgreSQL server.

A database made by the pre-migration `create_all` (tests/legacy_schemas.py) and full of
rows is recognised, stamped and upgraded with every row intact; a fresh one is built to
exactly the models; two replicas upgrading at once both end at head.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import JSON, Engine, MetaData, inspect, select, text

from services.common.db import make_engine, sqlite_url
from services.common.migrations import Schema, baseline, current, head, upgrade
from services.registry import models as registry_models
from services.registry.store import SCHEMA as REGISTRY
from services.retrieval import store as retrieval_store
from services.retrieval.chunking import Chunk
from services.retrieval.records import DocumentInput, PreparedDocument
from services.retrieval.store import SCHEMA as RETRIEVAL
from services.training import store as training_store
from services.training.store import SCHEMA as TRAINING
from tests import legacy_schemas
from tests.postgres import create_database, postgres_bin, postgres_server
from tests.threads import at_once

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

SCHEMAS: dict[str, tuple[Schema, MetaData, MetaData]] = {
    "registry": (REGISTRY, registry_models.Base.metadata, legacy_schemas.registry),
    "training": (TRAINING, training_store.metadata, legacy_schemas.training),
    "retrieval": (RETRIEVAL, retrieval_store.metadata_obj, legacy_schemas.retrieval),
}
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    if postgres_bin() is None:
        pytest.skip("no PostgreSQL server installed")
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> Iterator[str]:
    """A fresh, empty database's URL."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "db.sqlite")
        return
    yield create_database(request.getfixturevalue("postgres"))


@pytest.fixture
def engine(database) -> Iterator[Engine]:
    engine = make_engine(database)
    yield engine
    engine.dispose()


def _fill(name: str, engine: Engine, tables: MetaData) -> dict[str, list[tuple]]:
    """Rows in every table of the legacy schema; returns them by table, as inserted."""
    t = tables.tables
    rows: dict[str, list[dict]] = {}
    if name == "training":
        rows["datasets"] = [
            dict(id="ds-1", tenant="acme", name="toy", format="chat", rows=3,
                 size_bytes=120, sha256="a" * 64, created_at=1.5)
        ]  # fmt: skip
        rows["jobs"] = [
            dict(id=f"job-{i}", tenant="acme", spec='{"method": "lora"}', state=state,
                 step=i, total_steps=10, metrics='{"train_loss": 0.5}', failure_reason="",
                 adapter_ref="", created_at=2.0 + i, started_at=None, finished_at=None,
                 attempts=1, cancel_requested=False, events_offset=7)
            for i, state in enumerate(["queued", "running", "succeeded"])
        ]  # fmt: skip
        rows["job_events"] = [
            dict(job_id="job-1", sequence=s, time=3.0, kind="step", payload='{"step": 1}')
            for s in (1, 2)
        ]
    elif name == "registry":
        rows["adapters"] = [dict(id=1, tenant="acme", name="sql", created_at=NOW)]
        rows["versions"] = [
            dict(id=1, adapter_id=1, version=1, digest="d" * 64, size_bytes=10, peft_type="LORA",
                 base_model="tiny", peft_config={"r": 8}, lineage={"job": "j"},
                 metrics={"loss": 0.1}, description="first", created_at=NOW)
        ]  # fmt: skip
        rows["files"] = [
            dict(id=1, version_id=1, path="adapter_model.safetensors", size_bytes=10,
                 sha256="e" * 64)
        ]  # fmt: skip
        rows["aliases"] = [
            dict(id=1, adapter_id=1, alias="prod", version=1, staged_version=0, effective_at=None)
        ]
        rows["events"] = [
            dict(sequence=1, tenant="acme", name="sql", kind=1, version=1, alias="",
                 previous_version=0, effective_at=NOW, occurred_at=NOW)
        ]  # fmt: skip
    else:
        rows["collections"] = [
            dict(id=1, tenant="acme", name="docs", embedding_model="minilm", dimension=4,
                 index_kind="flat", chunk_size=200, chunk_overlap=20, created_at=NOW, revision=3)
        ]  # fmt: skip
        rows["documents"] = [
            dict(id=1, collection_id=1, doc_id="a", metadata_json='{"k": "v"}', source_uri="",
                 source_title="A", revision=3)
        ]  # fmt: skip
        rows["doc_metadata"] = [dict(document_id=1, collection_id=1, key="k", value="v")]
        rows["chunks"] = [
            dict(id=1, collection_id=1, document_id=1, chunk_index=0, text="hello",
                 start_char=0, end_char=5, vector=b"\x00" * 16, revision=3)
        ]  # fmt: skip
    with engine.begin() as conn:
        for table, values in rows.items():
            conn.execute(t[table].insert(), values)
    return _read(engine, tables)


def _read(engine: Engine, tables: MetaData) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {
            name: [tuple(r) for r in conn.execute(select(table).order_by(*_orderable(table)))]
            for name, table in tables.tables.items()
        }


def _orderable(table) -> list:
    return [c for c in table.columns if not isinstance(c.type, JSON)]


def _differences(engine: Engine, schema: Schema, models: MetaData) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": schema.version_table})
        return compare_metadata(context, models)


@pytest.mark.parametrize("name", SCHEMAS)
def test_fresh_database_is_built_to_the_models(name, engine):
    schema, models, _ = SCHEMAS[name]
    assert current(engine, schema) is None
    assert upgrade(engine, schema) == head(schema)
    assert current(engine, schema) == head(schema)
    assert _differences(engine, schema, models) == []
    assert upgrade(engine, schema) == head(schema)  # at head: nothing to do


@pytest.mark.parametrize("name", SCHEMAS)
def test_pre_migration_database_with_data_is_stamped_and_upgraded(name, engine):
    schema, models, legacy = SCHEMAS[name]
    legacy.create_all(engine)
    before = _fill(name, engine, legacy)
    assert all(before.values())

    assert upgrade(engine, schema) == head(schema)

    assert current(engine, schema) == head(schema)
    assert _read(engine, legacy) == before
    assert _differences(engine, schema, models) == []
    # the stamp went through the baseline: it was recognised, not rebuilt
    assert baseline(schema) == "0001_baseline"


def test_stores_open_a_pre_migration_database(engine):
    """The store's constructor is the start-up path: it upgrades, then reads the old rows."""
    legacy_schemas.training.create_all(engine)
    _fill("training", engine, legacy_schemas.training)
    store = training_store.TrainingStore(engine)
    job = store.find_job("job-1")
    assert job is not None and job.state == "running" and job.metrics == {"train_loss": 0.5}
    assert [e.sequence for e in store.events_after("job-1", 0)] == [1, 2]


def test_retrieval_store_writes_to_a_pre_migration_database(engine):
    """The write path draws ids from the tables' own sequences (COPY on PostgreSQL): on a
    database the old service filled, it upgrades at start and writes after the old rows."""
    t = legacy_schemas.retrieval.tables
    legacy_schemas.retrieval.create_all(engine)
    with engine.begin() as conn:  # as the old service wrote: ids from the columns' defaults
        collection = conn.execute(
            t["collections"].insert().values(
                tenant="acme", name="docs", embedding_model="m", dimension=4,
                index_kind="exact", chunk_size=200, chunk_overlap=20, created_at=NOW, revision=1,
            )
        ).inserted_primary_key[0]  # fmt: skip
        document = conn.execute(
            t["documents"].insert().values(
                collection_id=collection, doc_id="a", metadata_json="{}", source_uri="",
                source_title="A", revision=1,
            )
        ).inserted_primary_key[0]  # fmt: skip
        old = conn.execute(
            t["chunks"].insert().values(
                collection_id=collection, document_id=document, chunk_index=0, text="hello",
                start_char=0, end_char=5, vector=b"\x00" * 16, revision=1,
            )
        ).inserted_primary_key[0]  # fmt: skip

    store = retrieval_store.RetrievalStore(engine)
    record = store.get_collection("acme", "docs")
    doc = PreparedDocument(
        DocumentInput("b", "text", {"k": "v"}, "", "B"),
        [Chunk(0, "b part", 0, 6)],
        np.ones((1, 4), np.float32),
    )
    written = store.write_documents(record, [doc])

    assert written.added_ids.tolist() and int(written.added_ids.min()) > old
    assert store.chunk_ids(record.pk).tolist() == [old, *written.added_ids.tolist()]
    assert store.hydrate(record.pk, [old])[old].text == "hello"


def test_services_keep_their_own_version_tables(engine):
    """The three services may share one database without reading each other's history."""
    for schema, _, _ in SCHEMAS.values():
        upgrade(engine, schema)
    tables = set(inspect(engine).get_table_names())
    assert {f"alembic_version_{n}" for n in SCHEMAS} <= tables
    for name, (schema, _, _) in SCHEMAS.items():
        assert current(engine, schema) == head(schema), name


@pytest.mark.parametrize("name", ["training", "registry"])
def test_replicas_upgrading_at_once_both_end_at_head(name, database):
    schema = SCHEMAS[name][0]
    engines = [make_engine(database) for _ in range(3)]
    results, errors = at_once([functools.partial(upgrade, e, schema) for e in engines])
    assert errors == []
    assert results == [head(schema)] * len(engines)
    with engines[0].connect() as conn:
        versions = conn.execute(text(f"SELECT * FROM {schema.version_table}")).all()
    assert versions == [(head(schema),)]
    for engine in engines:
        engine.dispose()


@pytest.mark.parametrize(
    ("service", "env", "file"),
    [
        ("training", {}, "training/training.db"),
        ("registry", {}, "registry/registry.db"),
    ],
)
def test_migrate_command(service, env, file, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}", "migrate"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "LORAPLEX_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    schema = SCHEMAS[service][0]
    assert f"database at {head(schema)} (was unversioned)" in result.stderr
    engine = make_engine(sqlite_url(tmp_path / file))
    assert current(engine, schema) == head(schema)
    engine.dispose()
