"""Fixtures: one sandbox PostgreSQL with pg_cron for the session, a fresh database per test.

pg_cron's launcher lives in ``postgres`` (cron.database_name), which no test
drops: with pg_cron 1.4 a launcher whose database connections are
terminated does not come back until the server restarts. The per-test
databases are app databases, so the revisions schedule their jobs in
``postgres`` through cron.schedule_in_database.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator

import psycopg
import pytest
from pytest_postgresql.janitor import DatabaseJanitor

from session_status.pgcron import job_name
from session_status.sandbox import SUPERUSER, Sandbox
from tests import helpers

TEMPLATE_DATABASE = "session_status_template"


@pytest.fixture(autouse=True)
def _no_database_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # DATABASE_URL wins over alembic.ini; a value left in the shell must not
    # send a test's migrations to another server.
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(cron_database="postgres") as server:
        yield server


@pytest.fixture
def cron_conn(sandbox: Sandbox) -> Iterator[psycopg.Connection]:
    """A superuser connection to pg_cron's database."""
    with sandbox.connect("postgres") as conn:
        yield conn


def _database_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    return f"t_{base}_{digest}"


def _janitor(sandbox: Sandbox, dbname: str, template: str | None = None) -> DatabaseJanitor:
    return DatabaseJanitor(
        user=SUPERUSER, host=sandbox.host, port=sandbox.port, dbname=dbname, template_dbname=template
    )


def _remove_jobs(sandbox: Sandbox, dbname: str) -> None:
    # The run-details retention job runs in pg_cron's database, not in dbname.
    with sandbox.connect("postgres") as conn:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone():
            conn.execute(
                "DELETE FROM cron.job WHERE database = %s OR jobname = %s",
                (dbname, job_name(dbname, "cron-retention")),
            )


@pytest.fixture
def database(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[str]:
    """The name of an empty database created for this test and dropped after it."""
    dbname = _database_name(request)
    with _janitor(sandbox, dbname):
        try:
            yield dbname
        finally:
            _remove_jobs(sandbox, dbname)


@pytest.fixture
def database_url(sandbox: Sandbox, database: str) -> str:
    return sandbox.url(database)


@pytest.fixture(scope="session")
def migrated_template(sandbox: Sandbox) -> str:
    """A template database migrated up to the tick function, without the job."""
    with sandbox.connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DATABASE}")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DATABASE}")
    helpers.upgrade(sandbox.url(TEMPLATE_DATABASE), "session_status_0003")
    return TEMPLATE_DATABASE


@pytest.fixture
def migrated_database(sandbox: Sandbox, migrated_template: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A copy of the migrated template for this test: table and function, no job."""
    dbname = _database_name(request)
    with _janitor(sandbox, dbname, template=migrated_template):
        yield dbname


@pytest.fixture
def app_conn(sandbox: Sandbox, migrated_database: str) -> Iterator[psycopg.Connection]:
    """An autocommit superuser connection to the migrated test database, in UTC."""
    with sandbox.connect(migrated_database) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn


# Every extra connection runs with these, so a call that waits for a row lock
# fails with LockNotAvailable instead of hanging the test, and a waiting
# backend checks for a deadlock after 50 ms instead of 1 s.
CONNECTION_SETTINGS = "SET lock_timeout = '2s'; SET statement_timeout = '20s'; SET deadlock_timeout = '50ms'"


@pytest.fixture
def connect(sandbox: Sandbox, migrated_database: str) -> Iterator[Callable[..., psycopg.Connection]]:
    """Open more connections to the migrated test database, each with CONNECTION_SETTINGS; closed after the test."""
    opened: list[psycopg.Connection] = []

    def _connect(*, autocommit: bool = True, application_name: str = "app") -> psycopg.Connection:
        conn = psycopg.connect(
            sandbox.conninfo(migrated_database), autocommit=autocommit, application_name=application_name
        )
        opened.append(conn)
        conn.execute(CONNECTION_SETTINGS)
        if not autocommit:
            conn.commit()
        return conn

    yield _connect
    for conn in opened:
        conn.close()


HEAD_TEMPLATE_DATABASE = "session_status_head_template"
# A schedule that does not fire while the suite runs: the template must have
# no job connecting to it, or CREATE DATABASE ... TEMPLATE fails.
IDLE_SCHEDULE = "0 0 1 1 *"


@pytest.fixture(scope="session")
def head_template(sandbox: Sandbox) -> str:
    """A template database migrated to head, whose pg_cron jobs are removed again."""
    with sandbox.connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {HEAD_TEMPLATE_DATABASE}")
        conn.execute(f"CREATE DATABASE {HEAD_TEMPLATE_DATABASE}")
    helpers.upgrade(sandbox.url(HEAD_TEMPLATE_DATABASE), "head", schedule=IDLE_SCHEDULE)
    _remove_jobs(sandbox, HEAD_TEMPLATE_DATABASE)
    return HEAD_TEMPLATE_DATABASE


@pytest.fixture
def head_database(sandbox: Sandbox, head_template: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A copy of the head template for this test: every table, function and view, no job."""
    dbname = _database_name(request)
    with _janitor(sandbox, dbname, template=head_template):
        yield dbname


@pytest.fixture
def head_conn(sandbox: Sandbox, head_database: str) -> Iterator[psycopg.Connection]:
    """An autocommit superuser connection to the head-migrated test database, in UTC."""
    with sandbox.connect(head_database) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn
