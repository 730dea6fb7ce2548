"""Session-wide real services: redis-server, PostgreSQL, the NAVER Pay sandbox.

Started once per test session on free loopback ports and stopped at the end. Tests that need
a clean slate ask for the function-scoped fixtures (a fresh Redis db flush, a fresh database,
a sandbox reset).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import services


@pytest.fixture(scope="session", autouse=True)
def _process_logs_under_pytest_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Processes started by tests (tests/processes.py) keep their logs under pytest's own
    temporary directory, which pytest prunes (the last three sessions), not in /tmp forever."""
    os.environ["NPAY_PROCS_TMP"] = str(tmp_path_factory.mktemp("processes"))


@pytest.fixture(scope="session")
def redis_service() -> Iterator[services.Service]:
    svc = services.start_redis()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def postgres_service() -> Iterator[services.Service]:
    svc = services.start_postgres()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def sandbox_service() -> Iterator[services.Service]:
    svc = services.start_sandbox()
    yield svc
    svc.stop()


@pytest.fixture
def sandbox_url(sandbox_service: services.Service) -> str:
    """The sandbox's base URL, with its state reset for this test."""
    httpx.post(f"{sandbox_service.url}/_sandbox/reset", timeout=5).raise_for_status()
    return sandbox_service.url


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'npay.db'}"


@pytest.fixture
def postgres_url(postgres_service: services.Service) -> Iterator[str]:
    """A brand-new database in the session's PostgreSQL cluster (dropped after the test: a
    cluster holding every test's database took half a minute to delete at the end)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield services.create_pg_database(postgres_service, name)
    services.drop_pg_database(postgres_service, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


class Database:
    """A migrated database: its URL, an engine and a session factory. ``migrate=False``: the
    database at ``url`` is already at the newest revision (a copy of the session's template)."""

    def __init__(self, url: str, migrate: bool = True) -> None:
        from models import make_engine, make_session_factory
        from models.migrate import upgrade

        if migrate:
            upgrade(url)
        self.url = url
        self.engine = make_engine(url)
        self.sessions = make_session_factory(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def sql(self, statement: str, **params: object) -> list:  # type: ignore[type-arg]
        """Run SQL the way a user would, committing; returns rows for a SELECT."""
        import sqlalchemy as sa

        with self.engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result) if result.returns_rows else []


# Every test's database is a copy of one migrated per session (per xdist process): running the
# migrations took ~0.5 s per test, a copy takes milliseconds (SQLite) or ~50 ms (PostgreSQL).
# The migrations themselves are tested on empty databases (tests/models/test_*migration*.py).

@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return services.migrated_sqlite_file(tmp_path_factory.mktemp("template") / "migrated.db")


@pytest.fixture(scope="session")
def _postgres_template(postgres_service: services.Service) -> str:
    from models.migrate import upgrade

    upgrade(services.create_pg_database(postgres_service, "npay_migrated"))
    return "npay_migrated"


def _migrated(url: str, request: pytest.FixtureRequest) -> Database:
    """The (new, empty) database at ``url`` replaced by a copy of the migrated template."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    assert parsed.database
    if parsed.get_backend_name() == "sqlite":
        template: Path = request.getfixturevalue("_sqlite_template")
        assert not Path(parsed.database).exists(), "a test's database is new"
        shutil.copyfile(template, parsed.database)
    else:
        name = request.getfixturevalue("_postgres_template")
        services.recreate_pg_database(request.getfixturevalue("postgres_service"), parsed.database, name)
    return Database(url, migrate=False)


@pytest.fixture
def db(database_url: str, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A freshly migrated database, once on SQLite and once on PostgreSQL."""
    database = _migrated(database_url, request)
    yield database
    database.engine.dispose()


@pytest.fixture
def sqlite_db(sqlite_url: str, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A freshly migrated SQLite database."""
    database = _migrated(sqlite_url, request)
    yield database
    database.engine.dispose()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    """Expose each phase's report on the item (fixtures use it to print logs on failure)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
