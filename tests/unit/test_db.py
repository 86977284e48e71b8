"""SQLite engines: WAL switched on even when connections to a fresh file race for it."""

from __future__ import annotations

import functools
import sqlite3

import pytest
from sqlalchemy import Engine, text

from services.common import db
from services.common.db import make_engine
from tests.threads import at_once


class _Cursor:
    """A cursor whose first `locked` executions fail as SQLite fails a racing WAL switch."""

    def __init__(self, locked: int, error: str = "database is locked") -> None:
        self.locked = locked
        self.error = error
        self.calls = 0

    def execute(self, sql: str) -> None:
        self.calls += 1
        if self.calls <= self.locked:
            raise sqlite3.OperationalError(self.error)


def test_the_wal_switch_is_retried_while_the_file_is_locked():
    cursor = _Cursor(locked=3)
    db._enable_wal(cursor)  # type: ignore[arg-type]
    assert cursor.calls == 4


def test_other_errors_and_a_lock_past_the_busy_timeout_are_raised(monkeypatch):
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        db._enable_wal(_Cursor(locked=1, error="disk I/O error"))  # type: ignore[arg-type]
    monkeypatch.setattr(db, "SQLITE_BUSY_SECONDS", 0.05)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        db._enable_wal(_Cursor(locked=10**6))  # type: ignore[arg-type]


def _journal_mode(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("PRAGMA journal_mode")).scalar())


def test_engines_opening_a_fresh_file_together_all_connect_in_wal(tmp_path):
    for trial in range(20):
        url = f"sqlite:///{tmp_path / f'fresh{trial}.db'}"
        engines = [make_engine(url) for _ in range(4)]
        modes, errors = at_once([functools.partial(_journal_mode, e) for e in engines])
        for engine in engines:
            engine.dispose()
        assert errors == [] and modes == ["wal"] * len(engines)
