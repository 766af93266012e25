"""An existing app with its own lineage installs session-status from the wheel.

The example app in tests/host_app has two revisions: host_0001 (rooms) and
host_0002 (bookings, with a foreign key to sessions and
``depends_on = "session_status_0001"``). The per-test database is an app
database of the session sandbox, so the job lives in ``postgres``.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from session_status import pgcron
from session_status.sandbox import Sandbox
from session_status.schema import OWNED_TABLES
from tests import helpers
from tests.host.conftest import InstalledWheel

OUR_HEAD = helpers.our_head()


def versions(sandbox: Sandbox, database: str) -> set[str]:
    with sandbox.connect(database) as conn:
        if conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,):
            return set()
        return {row[0] for row in conn.execute("SELECT version_num FROM alembic_version")}


def tables(sandbox: Sandbox, database: str) -> set[str]:
    with sandbox.connect(database) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows} - {"alembic_version"}


def routines(sandbox: Sandbox, database: str) -> set[str]:
    with sandbox.connect(database) as conn:
        rows = conn.execute("SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace").fetchall()
    return {row[0] for row in rows}


@pytest.fixture
def alembic(installed_wheel: InstalledWheel, host_app: Path, database_url: str):  # type: ignore[no-untyped-def]
    def run(*args: str, expect_success: bool = True) -> str:
        result = installed_wheel.alembic(host_app, database_url, *args)
        if expect_success:
            assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    return run


def test_heads_lists_both_lineages(alembic) -> None:  # type: ignore[no-untyped-def]
    output = alembic("heads")

    assert "host_0002 (host) (head)" in output
    assert f"{OUR_HEAD} (session_status) (head)" in output


def test_upgrade_heads_applies_both_lineages(
    alembic, sandbox: Sandbox, database: str, cron_conn: psycopg.Connection
) -> None:  # type: ignore[no-untyped-def]
    alembic("upgrade", "heads")

    assert versions(sandbox, database) == {"host_0002", OUR_HEAD}
    assert tables(sandbox, database) == {"rooms", "bookings", *OWNED_TABLES}
    # The host's alembic.ini sets schedule in its [session_status] section.
    tick_jobs = [job for job in helpers.jobs_for(cron_conn, database) if job[0] == pgcron.job_name(database)]
    assert tick_jobs == [
        (
            pgcron.job_name(database),
            "*/5 * * * *",
            'CALL "public".advance_session_statuses_in_batches(batch_size => 10000)',
        )
    ]


def test_upgrade_our_branch_alone(alembic, sandbox: Sandbox, database: str) -> None:  # type: ignore[no-untyped-def]
    alembic("upgrade", "session_status@head")

    assert versions(sandbox, database) == {OUR_HEAD}
    assert tables(sandbox, database) == OWNED_TABLES


def test_depends_on_pulls_in_our_revision(alembic, sandbox: Sandbox, database: str) -> None:  # type: ignore[no-untyped-def]
    output = alembic("upgrade", "host@head")

    # Alembic applies session_status_0001 first. The version table then
    # contains host_0002 alone, which implies its dependency.
    assert output.index("-> session_status_0001") < output.index("-> host_0002")
    assert versions(sandbox, database) == {"host_0002"}
    assert tables(sandbox, database) == {"rooms", "bookings", "sessions"}

    alembic("upgrade", "heads")
    assert versions(sandbox, database) == {"host_0002", OUR_HEAD}


def test_check_heads_gates_partial_upgrade(alembic) -> None:  # type: ignore[no-untyped-def]
    alembic("upgrade", "session_status@head")
    partial = alembic("current", "--check-heads", expect_success=False)

    assert "Database is not on all head revisions" in partial

    alembic("upgrade", "heads")
    alembic("current", "--check-heads")


def test_downgrade_our_branch_after_dependent_host_revision(
    alembic, sandbox: Sandbox, database: str, cron_conn: psycopg.Connection
) -> None:  # type: ignore[no-untyped-def]
    alembic("upgrade", "heads")
    with sandbox.connect(database) as conn:
        conn.execute("INSERT INTO rooms (name) VALUES ('Studio A')")

    alembic("downgrade", "host@-1")
    alembic("downgrade", "session_status@base")

    assert versions(sandbox, database) == {"host_0001"}
    assert tables(sandbox, database) == {"rooms"}
    assert routines(sandbox, database) == set()
    assert helpers.jobs_for(cron_conn, database) == []
    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT name FROM rooms").fetchall() == [("Studio A",)]


def test_downgrade_our_branch_takes_dependent_revision(
    alembic, sandbox: Sandbox, database: str, cron_conn: psycopg.Connection
) -> None:  # type: ignore[no-untyped-def]
    alembic("upgrade", "heads")

    output = alembic("downgrade", "session_status@base")

    # Alembic downgrades host_0002 as well, because it depends on
    # session_status_0001: the bookings table is dropped with its rows.
    assert "Running downgrade host_0002 -> host_0001" in output
    assert versions(sandbox, database) == {"host_0001"}
    assert tables(sandbox, database) == {"rooms"}
    assert helpers.jobs_for(cron_conn, database) == []


def test_undeclared_foreign_key_stops_downgrade(
    alembic, sandbox: Sandbox, database: str, cron_conn: psycopg.Connection
) -> None:  # type: ignore[no-untyped-def]
    alembic("upgrade", "heads")
    jobs = helpers.jobs_for(cron_conn, database)
    with sandbox.connect(database) as conn:
        # A host table that references sessions without a depends_on.
        conn.execute("CREATE TABLE notes (session_id bigint REFERENCES sessions (id))")

    output = alembic("downgrade", "session_status@base", expect_success=False)

    assert "cannot drop table sessions because other objects depend on it" in output
    assert versions(sandbox, database) == {"host_0002", OUR_HEAD}
    assert tables(sandbox, database) == {"rooms", "bookings", "notes", *OWNED_TABLES}
    assert helpers.jobs_for(cron_conn, database) == jobs


def test_upgrade_head_rejects_two_lineages(alembic, sandbox: Sandbox, database: str) -> None:  # type: ignore[no-untyped-def]
    output = alembic("upgrade", "head", expect_success=False)

    assert "Multiple head revisions are present" in output
    assert versions(sandbox, database) == set()
