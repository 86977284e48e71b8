"""Schema migrations with Alembic: every service's database is upgraded to head at start.

Each service keeps its own Alembic script folder (`services/<svc>/migrations`: `env.py`
and `versions/`) and its own version table (`alembic_version_<svc>`), so the services
may share one PostgreSQL database without reading each other's history. `upgrade` runs
under a lock, so replicas starting together apply each revision once and the others
wait and find the schema at head:

- PostgreSQL: a transaction-scoped advisory lock keyed on the service name, and the
  whole upgrade in that one transaction (PostgreSQL's DDL is transactional);
- SQLite: `BEGIN EXCLUSIVE` around the upgrade (one writer per file).

A database made before migrations existed (by `create_all`) has the service's tables
but no version table: it is stamped with the first revision, which is exactly that
schema, and then upgraded like any other.

Writing a revision: `PYTHONPATH=. alembic -c services/<svc>/migrations/alembic.ini revision -m`
(with `LORAPLEX_MIGRATE_URL` pointing at a database at head for `--autogenerate`), then
keep every change additive (expand, then contract in a later release) so replicas of the
previous release keep working during a rolling update.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect, text

from services.common.db import make_engine, write_transaction
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schema:
    """One service's migrations: where its scripts are and how to spot a pre-Alembic database."""

    #: The service ("registry", "training", "retrieval"): names the version table and lock.
    name: str
    #: The Alembic script folder (holds env.py and versions/).
    script_dir: Path
    #: A table every pre-Alembic database of this service has (created by `create_all`).
    marker_table: str

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.name}"

    @property
    def lock_key(self) -> int:
        """A stable signed 64-bit key for `pg_advisory_xact_lock`."""
        digest = hashlib.sha256(f"loraplex-migrate-{self.name}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)


@functools.cache
def _scripts(script_dir: Path) -> ScriptDirectory:
    return ScriptDirectory(str(script_dir))


def _config(schema: Schema, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(schema.script_dir))
    config.attributes["version_table"] = schema.version_table
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head(schema: Schema) -> str:
    revision = _scripts(schema.script_dir).get_current_head()
    assert revision is not None, f"{schema.script_dir} has no revisions"
    return revision


def baseline(schema: Schema) -> str:
    """The first revision: the schema `create_all` made before migrations existed."""
    bases = _scripts(schema.script_dir).get_bases()
    assert len(bases) == 1, f"{schema.script_dir} must have exactly one base revision"
    return bases[0]


def current(engine: Engine, schema: Schema) -> str | None:
    """The revision the database is at; None for an empty or pre-Alembic database."""
    with engine.connect() as conn:
        return _current(conn, schema)


def _current(conn: Connection, schema: Schema) -> str | None:
    context = MigrationContext.configure(conn, opts={"version_table": schema.version_table})
    return context.get_current_revision()


def upgrade(engine: Engine, schema: Schema, revision: str = "head") -> str:
    """Brings the database to `revision` (default head) under the lock; returns where it is.

    Cheap when nothing is to do (one read of the version table), so every replica and
    every store can call it at start.
    """
    target = head(schema) if revision == "head" else revision
    with engine.connect() as conn:
        if _current(conn, schema) == target:
            return target
    with _locked(engine, schema) as conn:
        before = _current(conn, schema)
        if before is None and inspect(conn).has_table(schema.marker_table):
            log.info(
                "%s: database made before migrations; stamping it at %s",
                schema.name,
                baseline(schema),
            )
            command.stamp(_config(schema, conn), baseline(schema))
            before = baseline(schema)
        if before != target:
            command.upgrade(_config(schema, conn), target)
            log.info("%s: schema upgraded from %s to %s", schema.name, before, target)
        return _current(conn, schema) or ""


@contextmanager
def _locked(engine: Engine, schema: Schema) -> Iterator[Connection]:
    """One connection holding the service's migration lock, committed at the end.

    The connection is inside a transaction the caller owns, so Alembic neither begins
    nor commits one of its own: the stamp and every revision commit together, or none.
    """
    with write_transaction(engine, exclusive=True) as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": schema.lock_key})
        yield conn


def run_env(context: Any, target_metadata: Any) -> None:
    """The body of every service's `env.py`: migrate on the runner's connection.

    From the `alembic` command line (authoring revisions), the URL comes from
    `sqlalchemy.url` in the ini file or `LORAPLEX_MIGRATE_URL`.
    """
    config = context.config
    version_table = config.attributes.get("version_table") or config.get_main_option(
        "version_table"
    )
    connection = config.attributes.get("connection")
    options = {"target_metadata": target_metadata, "version_table": version_table}
    if connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = os.environ.get("LORAPLEX_MIGRATE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set LORAPLEX_MIGRATE_URL to the database to work on")
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, **options)
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()


def migrate_main(settings: ServiceSettings, schema: Schema, url: str) -> None:
    """`python -m services.<svc> migrate`: upgrades the service's database to head, then exits.

    For a deployment that migrates in a Job or an init container before it rolls out
    replicas; the services also upgrade at start, so it is never required.
    """
    from services.common.logs import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    engine = make_engine(url)
    try:
        before = current(engine, schema)
        after = upgrade(engine, schema)
    finally:
        engine.dispose()
    log.info("%s: database at %s (was %s)", schema.name, after, before or "unversioned")
