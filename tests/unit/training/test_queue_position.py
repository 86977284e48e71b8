"""What a tenant sees of the queue counts only its own jobs."""

from __future__ import annotations

from services.common.db import make_engine
from services.training.store import NEWEST_FIRST, TrainingStore


def test_queue_position_counts_only_the_tenants_own_jobs(tmp_path):
    store = TrainingStore(make_engine(f"sqlite:///{tmp_path / 'training.db'}"))
    for _ in range(3):
        store.create_job("globex", {"base_model": "tiny"})
    first = store.create_job("acme", {"base_model": "tiny"})
    second = store.create_job("acme", {"base_model": "tiny"})
    assert store.queue_position(first) == 1
    assert store.get_job("acme", second.id).queue_position == 2
    jobs = store.list_jobs("acme", NEWEST_FIRST, 10)
    assert sorted(j.queue_position for j in jobs) == [1, 2]
    store.update_job(first.id, state="running")
    assert store.get_job("acme", second.id).queue_position == 1
