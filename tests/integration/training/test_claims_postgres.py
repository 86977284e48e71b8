"""The replica scenarios of tests/unit/training/test_claims.py on a real PostgreSQL server:
claims with FOR UPDATE SKIP LOCKED, the database's clock, row-locked fenced writes."""

from __future__ import annotations

import pytest

from services.common.db import make_engine
from tests.postgres import create_database, postgres_bin, postgres_server
from tests.unit.training import test_claims as scenarios
from tests.unit.training.test_claims import world  # noqa: F401 - the scenarios' fixture

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(postgres_bin() is None, reason="no PostgreSQL server installed"),
]


@pytest.fixture(scope="module")
def server():
    with postgres_server() as url:
        yield url


@pytest.fixture
def engine(server):
    url = create_database(server)
    engine = make_engine(url)
    yield engine
    engine.dispose()


test_two_replicas_claim_each_job_once = scenarios.test_two_replicas_claim_each_job_once
test_a_dead_replicas_job_is_taken_over_with_its_worker_once_the_lease_lapses = (
    scenarios.test_a_dead_replicas_job_is_taken_over_with_its_worker_once_the_lease_lapses
)
test_a_restarted_replica_takes_its_own_job_back_at_once = (
    scenarios.test_a_restarted_replica_takes_its_own_job_back_at_once
)
test_a_version_pushed_before_a_crash_is_not_pushed_again = (
    scenarios.test_a_version_pushed_before_a_crash_is_not_pushed_again
)
test_a_stale_owner_writes_nothing = scenarios.test_a_stale_owner_writes_nothing
test_a_clean_shutdown_hands_the_job_back_at_once = (
    scenarios.test_a_clean_shutdown_hands_the_job_back_at_once
)
test_a_worker_that_cannot_start_fails_the_job_with_a_reason = (
    scenarios.test_a_worker_that_cannot_start_fails_the_job_with_a_reason
)
