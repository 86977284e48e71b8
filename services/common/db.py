"""SQLAlchemy engines: SQLite under the data root by default, PostgreSQL by URL."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event


def sqlite_url(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


#: How long a SQLite connection waits for another's lock before "database is locked".
SQLITE_BUSY_SECONDS = 30.0


def make_engine(url: str) -> Engine:
    """WAL + full sync for SQLite so every committed transaction survives a crash."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS}
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_conn.cursor()
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """`PRAGMA journal_mode=WAL`, retried while another connection holds the file.

    Switching a new file to WAL needs it alone for a moment, and SQLite answers
    "database is locked" at once, without its busy timeout, to a connection that finds
    another switching it: replicas or threads opening a fresh database together did
    fail this way (1 start in about 300 under load).
    """
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


@contextmanager
def write_transaction(engine: Engine, *, exclusive: bool = False) -> Iterator[Connection]:
    """A transaction that writes alone: committed at the end, rolled back on an error.

    On SQLite the write lock is taken at BEGIN (IMMEDIATE, or EXCLUSIVE to keep readers
    out too), so a read-then-write never fails halfway on another writer's commit and
    concurrent callers queue on the busy timeout; elsewhere it is a plain transaction
    (use row locks, `FOR UPDATE`, for exclusion). The connection is in a transaction
    the caller owns, so Alembic and SQLAlchemy begin no other.
    """
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as raw:
        # pysqlite begins transactions itself only before DML: take over BEGIN.
        conn = raw.execution_options(isolation_level="AUTOCOMMIT")
        with conn.begin():
            conn.exec_driver_sql("BEGIN EXCLUSIVE" if exclusive else "BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
