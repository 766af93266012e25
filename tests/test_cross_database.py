"""pg_cron in another database: the server's ``postgres`` runs the jobs of app databases.

These tests start their own server, so they may create roles, revoke
grants and wait for the real launcher without touching the shared one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from session_status import PrivilegeError, pgcron
from session_status.sandbox import Sandbox
from tests import catalog, helpers

MIGRATOR = "migrator"
SCHEDULE_IN_DATABASE = "cron.schedule_in_database(text,text,text,text,text,boolean)"
# A job scheduled every minute starts within 60 s; 15 s more for the launcher.
LAUNCHER_TIMEOUT_SECONDS = 75


@pytest.fixture(scope="module")
def server() -> Iterator[Sandbox]:
    with Sandbox(cron_database="postgres") as sandbox:
        with sandbox.connect("postgres") as conn:
            conn.execute("CREATE EXTENSION pg_cron")
            conn.execute(f"CREATE ROLE {MIGRATOR} LOGIN")
            conn.execute(f"GRANT USAGE ON SCHEMA cron TO {MIGRATOR}")
            conn.execute(f"GRANT pg_read_all_settings TO {MIGRATOR}")
        yield sandbox


@pytest.fixture
def cron(server: Sandbox) -> Iterator[psycopg.Connection]:
    with server.connect("postgres") as conn:
        yield conn


def fresh_database(server: Sandbox, name: str, owner: str | None = None) -> str:
    server.drop_database(name)
    server.create_database(name)
    if owner:
        with server.connect() as conn:
            conn.execute(f"ALTER DATABASE {name} OWNER TO {owner}")
    with server.connect("postgres") as conn:
        # The run-record retention job of ``name`` runs in postgres, not in ``name``.
        conn.execute(
            "DELETE FROM cron.job WHERE database = %s OR jobname = %s",
            (name, pgcron.job_name(name, "cron-retention")),
        )
    return name


@pytest.mark.slow
def test_launcher_runs_job_in_app_database(server: Sandbox, cron: psycopg.Connection) -> None:
    database = fresh_database(server, "appdb")
    helpers.upgrade(server.url(database), "head")
    job = cron.execute(
        "SELECT jobid, database FROM cron.job WHERE jobname = %s", (pgcron.job_name(database),)
    ).fetchone()
    assert job is not None
    assert job[1] == database

    now = datetime.now(UTC)
    with server.connect(database) as app:
        session_id = app.execute(
            "INSERT INTO sessions (starts_at, ends_at) VALUES (%s, %s) RETURNING id",
            (now - timedelta(minutes=1), now + timedelta(hours=1)),
        ).fetchone()[0]  # type: ignore[index]

        deadline = time.monotonic() + LAUNCHER_TIMEOUT_SECONDS
        status = "scheduled"
        while time.monotonic() < deadline:
            status = app.execute("SELECT status FROM sessions WHERE id = %s", (session_id,)).fetchone()[0]  # type: ignore[index]
            if status == "open":
                break
            time.sleep(1)

    assert status == "open"
    runs = cron.execute(
        "SELECT status, database FROM cron.job_run_details WHERE jobid = %s AND status <> 'running'", (job[0],)
    ).fetchall()
    assert runs
    assert {run[0] for run in runs} == {"succeeded"}
    assert {run[1] for run in runs} == {database}


def expected_jobs(database: str) -> list[tuple[str, str]]:
    """Return (name, database it runs in) of the package's jobs for ``database``, sorted by name."""
    return sorted(
        [
            (pgcron.job_name(database), database),
            (pgcron.job_name(database, "retention"), database),
            (pgcron.job_name(database, "cron-retention"), "postgres"),
        ]
    )


def test_each_app_database_gets_own_job(server: Sandbox, cron: psycopg.Connection) -> None:
    first = fresh_database(server, "first_app")
    second = fresh_database(server, "second_app")

    helpers.upgrade(server.url(first), "head")
    helpers.upgrade(server.url(second), "head")

    first_jobs = catalog.package_job_rows(cron, first)
    second_jobs = catalog.package_job_rows(cron, second)
    assert [(job[0], job[3]) for job in first_jobs] == expected_jobs(first)
    assert [(job[0], job[3]) for job in second_jobs] == expected_jobs(second)

    helpers.downgrade(server.url(second), "base")

    assert catalog.package_job_rows(cron, second) == []
    assert catalog.package_job_rows(cron, first) == first_jobs


def test_missing_schedule_in_database_grant(server: Sandbox, cron: psycopg.Connection) -> None:
    database = fresh_database(server, "migrator_app", owner=MIGRATOR)
    url = server.url(database, user=MIGRATOR)
    cron.execute(f"REVOKE EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} FROM PUBLIC, {MIGRATOR}")
    with server.connect(database) as conn:
        before = catalog.full_snapshot(conn)

    with pytest.raises(PrivilegeError) as raised:
        helpers.upgrade(url, "head")

    message = str(raised.value)
    assert f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {MIGRATOR};" in message
    assert "'postgres'" in message
    assert "Nothing was changed" in message
    with server.connect(database) as conn:
        assert catalog.full_snapshot(conn) == before
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)
    assert catalog.package_job_rows(cron, database) == []


def test_unreadable_settings_warn_and_migrate(
    server: Sandbox, cron: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # Without pg_read_all_settings the role cannot read cron.database_name,
    # so the upgrade takes pg_cron's default database and logs a warning.
    database = fresh_database(server, "unreadable_app", owner=MIGRATOR)
    url = server.url(database, user=MIGRATOR)
    cron.execute(f"REVOKE pg_read_all_settings FROM {MIGRATOR}")
    cron.execute(f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {MIGRATOR}")
    try:
        with caplog.at_level(logging.WARNING, logger="session_status.pgcron"):
            helpers.upgrade(url, "head")

        warnings = [
            record.getMessage()
            for record in caplog.records
            if record.name == "session_status.pgcron" and record.levelno == logging.WARNING
        ]
        assert warnings
        assert f"role {MIGRATOR!r} may not read shared_preload_libraries or cron.database_name" in warnings[0]
        assert "pg_cron's database is taken to be 'postgres'" in warnings[0]
        jobs = catalog.package_job_rows(cron, database)
        assert [(job[0], job[3]) for job in jobs] == expected_jobs(database)
        assert {job[4] for job in jobs} == {MIGRATOR}

        helpers.downgrade(url, "base")

        assert catalog.package_job_rows(cron, database) == []
    finally:
        cron.execute(f"REVOKE EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} FROM {MIGRATOR}")
        cron.execute(f"GRANT pg_read_all_settings TO {MIGRATOR}")


def test_unreadable_settings_still_need_grants(server: Sandbox, cron: psycopg.Connection) -> None:
    database = fresh_database(server, "unreadable_ungranted_app", owner=MIGRATOR)
    cron.execute(f"REVOKE EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} FROM PUBLIC, {MIGRATOR}")
    cron.execute(f"REVOKE pg_read_all_settings FROM {MIGRATOR}")
    with server.connect(database) as conn:
        before = catalog.full_snapshot(conn)
    try:
        with pytest.raises(PrivilegeError) as raised:
            helpers.upgrade(server.url(database, user=MIGRATOR), "head")
    finally:
        cron.execute(f"GRANT pg_read_all_settings TO {MIGRATOR}")

    message = str(raised.value)
    assert f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {MIGRATOR};" in message
    assert "'postgres'" in message
    assert "Nothing was changed" in message
    with server.connect(database) as conn:
        assert catalog.full_snapshot(conn) == before
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)
    assert catalog.package_job_rows(cron, database) == []


def test_documented_grants_let_role_migrate(server: Sandbox, cron: psycopg.Connection) -> None:
    database = fresh_database(server, "granted_app", owner=MIGRATOR)
    url = server.url(database, user=MIGRATOR)
    # With USAGE and pg_read_all_settings from the fixture, these are the
    # grants that docs/cross-database.md lists.
    cron.execute(f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {MIGRATOR}")
    try:
        helpers.upgrade(url, "head")
        jobs = catalog.package_job_rows(cron, database)

        assert [(job[0], job[3]) for job in jobs] == expected_jobs(database)
        assert {job[4] for job in jobs} == {MIGRATOR}

        helpers.downgrade(url, "base")

        assert catalog.package_job_rows(cron, database) == []
    finally:
        cron.execute(f"REVOKE EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} FROM {MIGRATOR}")
