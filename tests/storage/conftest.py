"""Storage test fixtures: every ``db_url`` test runs on SQLite and on PostgreSQL.

PostgreSQL is a throwaway cluster started once per session (``tests/pg.py``);
each test gets a fresh database in it. Without PostgreSQL binaries the
PostgreSQL variants skip, or fail when ``STOPE_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pg import (
    ExternalPostgres,
    PostgresCluster,
    services_required,
    start_server,
    unavailable_reason,
)


def _missing(reason: str) -> None:
    if services_required():
        pytest.fail(f"PostgreSQL required (STOPE_REQUIRE_SERVICES=1) but unavailable: {reason}")
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresCluster | ExternalPostgres]:
    if not os.environ.get("STOPE_TEST_POSTGRES_URL"):
        reason = unavailable_reason()
        if reason:
            _missing(reason)
    try:
        server = start_server()
    except (RuntimeError, OSError) as exc:
        _missing(f"could not start a throwaway cluster: {exc}")
    yield server
    server.destroy()


@pytest.fixture
def pg_url(pg_server: PostgresCluster | ExternalPostgres) -> str:
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'stope.sqlite3'}"
    return request.getfixturevalue("pg_url")
