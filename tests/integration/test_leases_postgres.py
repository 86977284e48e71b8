"""The kit's lease helper on a real PostgreSQL server (FOR UPDATE SKIP LOCKED, its clock)."""

from __future__ import annotations

import pytest

from services.common.db import make_engine
from tests import lease_cases
from tests.postgres import create_database, postgres_bin, postgres_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(postgres_bin() is None, reason="no PostgreSQL server installed"),
]


@pytest.fixture(scope="module")
def server():
    with postgres_server() as url:
        yield url


@pytest.fixture
def engines(server):
    url = create_database(server)
    made = [make_engine(url) for _ in range(3)]
    yield made
    for engine in made:
        engine.dispose()


def test_racing_claimers_take_each_row_once(engines):
    lease_cases.racing_claimers_each_row_once(engines)


def test_two_claimers_of_one_row_one_wins(engines):
    lease_cases.one_row_two_claimers_one_wins(engines[:2])


def test_expired_lease_is_reclaimed_and_the_stale_owner_fenced(engines):
    lease_cases.expired_lease_is_reclaimed_and_the_stale_owner_fenced(engines[0])


def test_heartbeat_keeps_the_lease(engines):
    lease_cases.heartbeat_keeps_the_lease(engines[0])


def test_own_rows_are_taken_back_before_expiry(engines):
    lease_cases.own_rows_are_taken_back_before_expiry(engines[0])
