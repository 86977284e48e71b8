"""The registry store reads one version per resolve, however many versions an adapter has."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from services.common.adapter_ref import AdapterName, parse_ref
from services.common.db import make_engine, sqlite_url
from services.common.errors import NotFound
from services.registry.peft_files import PeftInfo
from services.registry.records import FileRecord
from services.registry.store import AdapterStore

PEFT = PeftInfo.from_config(
    {"peft_type": "LORA", "base_model_name_or_path": "m", "r": 8, "target_modules": ["q"]}
)


def files(n: int) -> list[FileRecord]:
    return [FileRecord("adapter_config.json", 10, f"{n:064x}"), FileRecord("w.bin", 5, "a" * 64)]


@pytest.fixture
def store(tmp_path) -> AdapterStore:
    return AdapterStore(make_engine(sqlite_url(tmp_path / "registry.db")))


def statements(store: AdapterStore, ref: str) -> tuple[int, int]:
    """(SQL statements run, version) for one resolve."""
    seen: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        version = store.resolve(parse_ref(ref)).version
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    return len(seen), version


def test_resolve_cost_does_not_grow_with_versions(store):
    name = AdapterName("acme", "bot")
    store.create_version(name, files(1), PEFT, {}, {}, "", aliases=["prod"])
    few = [statements(store, r) for r in ("acme/bot", "acme/bot@1", "acme/bot@prod")]
    for n in range(2, 41):
        store.create_version(name, files(n), PEFT, {}, {}, "")
    many = [statements(store, r) for r in ("acme/bot", "acme/bot@1", "acme/bot@prod")]
    assert [c for c, _ in many] == [c for c, _ in few]
    assert [v for _, v in many] == [40, 1, 1]
    record = store.resolve(parse_ref("acme/bot@prod"))
    assert record.aliases == ("prod",) and [f.path for f in record.files] == [
        "adapter_config.json",
        "w.bin",
    ]


def test_resolve_refuses_what_is_absent(store):
    name = AdapterName("acme", "bot")
    store.create_version(name, files(1), PEFT, {}, {}, "")
    for ref in ("acme/bot@2", "acme/bot@prod", "acme/none", "globex/bot"):
        with pytest.raises(NotFound):
            store.resolve(parse_ref(ref))
    store.delete(name, 1, force=False)
    with pytest.raises(NotFound):
        store.resolve(parse_ref("acme/bot"))
