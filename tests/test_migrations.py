"""The revisions against a live server: round trips, idempotence, jobs of others, preflight."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from alembic.util import CommandError

from session_status.errors import PreflightError
from session_status.pgcron import job_name
from session_status.sandbox import Sandbox
from tests import helpers

FOREIGN_JOB = "someone_elses_vacuum"


@pytest.fixture
def foreign_job(cron_conn: psycopg.Connection) -> Iterator[int]:
    """A pg_cron job of another owner, which must survive every step."""
    cron_conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    jobid = cron_conn.execute("SELECT cron.schedule(%s, '0 3 * * *', 'VACUUM')", (FOREIGN_JOB,)).fetchone()[0]
    yield int(jobid)
    cron_conn.execute("DELETE FROM cron.job WHERE jobid = %s", (jobid,))


def tick_jobs(conn: psycopg.Connection, database: str) -> list[tuple[str, str, str]]:
    """Return the tick job of ``database``, as (name, schedule, command), in a list."""
    return [job for job in helpers.jobs_for(conn, database) if job[0] == job_name(database)]


def our_jobs(conn: psycopg.Connection, database: str) -> list[str]:
    """Return the names of every job of this package for ``database``, wherever it runs."""
    rows = conn.execute("SELECT jobname FROM cron.job WHERE jobname LIKE %s", (job_name(database) + "%",))
    return [row[0] for row in rows]


def foreign_job_present(cron_conn: psycopg.Connection, jobid: int) -> bool:
    row = cron_conn.execute("SELECT jobname, schedule, command FROM cron.job WHERE jobid = %s", (jobid,)).fetchone()
    return row == (FOREIGN_JOB, "0 3 * * *", "VACUUM")


def test_round_trip_leaves_no_trace(
    sandbox: Sandbox, database: str, cron_conn: psycopg.Connection, foreign_job: int
) -> None:
    url = sandbox.url(database)
    with sandbox.connect(database) as conn:
        pristine = helpers.catalog_snapshot(conn)

    for _ in range(2):
        helpers.upgrade(url, "head")
        assert tick_jobs(cron_conn, database) == [
            (
                job_name(database),
                "* * * * *",
                'CALL "public".advance_session_statuses_in_batches(batch_size => 10000)',
            )
        ]
        assert foreign_job_present(cron_conn, foreign_job)

        helpers.downgrade(url, "base")
        with sandbox.connect(database) as conn:
            assert helpers.catalog_snapshot(conn) == pristine
        assert our_jobs(cron_conn, database) == []
        assert foreign_job_present(cron_conn, foreign_job)


def test_upgrade_creates_the_contract(sandbox: Sandbox, database: str) -> None:
    helpers.upgrade(sandbox.url(database), "head")

    with sandbox.connect(database) as conn:
        columns = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = 'sessions'"
            ).fetchall()
        )
        function = conn.execute(
            "SELECT p.prosecdef, p.proconfig, p.proacl::text, obj_description(p.oid, 'pg_proc') "
            "FROM pg_proc p WHERE p.oid = 'public.advance_session_statuses(timestamptz, integer)'::regprocedure"
        ).fetchone()
        indexes = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'sessions'"
            ).fetchall()
        )
        rls = conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.sessions'::regclass").fetchone()

    assert columns["id"] == "bigint"
    assert columns["starts_at"] == "timestamp with time zone"
    assert columns["ends_at"] == "timestamp with time zone"
    assert columns["status"] == "text"
    assert function is not None
    prosecdef, proconfig, proacl, comment = function
    assert prosecdef is False
    assert proconfig == ["search_path=pg_catalog, pg_temp"]
    public_entries = [entry for entry in proacl.strip("{}").split(",") if entry.startswith("=")]
    assert public_entries == []  # an ACL entry for PUBLIC starts with "="
    assert comment.startswith("session-status:")
    assert "WHERE (status = 'scheduled'::text)" in indexes["sessions_due_to_open_idx"]
    assert "(starts_at)" in indexes["sessions_due_to_open_idx"]
    assert "(ends_at)" in indexes["sessions_due_to_complete_idx"]
    assert rls == (True,)


def test_downgrade_one_step_removes_only_job(sandbox: Sandbox, database: str, cron_conn: psycopg.Connection) -> None:
    url = sandbox.url(database)
    helpers.upgrade(url, "session_status_0004")
    with sandbox.connect(database) as conn:
        at_head = helpers.catalog_snapshot(conn)

    helpers.downgrade(url, "-1")

    with sandbox.connect(database) as conn:
        assert helpers.catalog_snapshot(conn) == at_head
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == ("session_status_0003",)
    assert helpers.jobs_for(cron_conn, database) == []


def test_upgrade_after_stamp_keeps_one_job(sandbox: Sandbox, database: str, cron_conn: psycopg.Connection) -> None:
    url = sandbox.url(database)
    helpers.upgrade(url, "session_status_0004")
    helpers.stamp(url, "session_status_0003")

    helpers.upgrade(url, "session_status_0004")

    assert len(helpers.jobs_for(cron_conn, database)) == 1


def test_downgrade_after_manual_unschedule(sandbox: Sandbox, database: str, cron_conn: psycopg.Connection) -> None:
    url = sandbox.url(database)
    helpers.upgrade(url, "head")
    cron_conn.execute("SELECT cron.unschedule(%s)", (job_name(database),))

    helpers.downgrade(url, "base")

    assert our_jobs(cron_conn, database) == []
    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('public.sessions')").fetchone() == (None,)


def test_custom_schema_and_schedule(sandbox: Sandbox, database: str, cron_conn: psycopg.Connection) -> None:
    url = sandbox.url(database)
    helpers.upgrade(url, "head", schema="booking", schedule="*/5 * * * *", batch_size="500")

    assert tick_jobs(cron_conn, database) == [
        (
            job_name(database),
            "*/5 * * * *",
            'CALL "booking".advance_session_statuses_in_batches(batch_size => 500)',
        )
    ]
    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('booking.sessions')").fetchone() == ("booking.sessions",)


def test_downgrade_uses_what_upgrade_created(sandbox: Sandbox, database: str, cron_conn: psycopg.Connection) -> None:
    # The configuration changed between upgrade and downgrade: the downgrade
    # still removes the objects where the upgrade put them.
    url = sandbox.url(database)
    with sandbox.connect(database) as conn:
        pristine = helpers.catalog_snapshot(conn)
    helpers.upgrade(url, "head", schema="booking", schedule="*/5 * * * *")

    helpers.downgrade(url, "base", schema="elsewhere", schedule="0 * * * *")

    with sandbox.connect(database) as conn:
        assert helpers.catalog_snapshot(conn) == pristine
    assert our_jobs(cron_conn, database) == []


def test_downgrade_keeps_schema_with_other_objects(sandbox: Sandbox, database: str) -> None:
    url = sandbox.url(database)
    helpers.upgrade(url, "head", schema="booking")
    with sandbox.connect(database) as conn:
        conn.execute("CREATE TABLE booking.app_notes (id int)")

    helpers.downgrade(url, "base")

    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('booking.sessions')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass('booking.app_notes')").fetchone() == ("booking.app_notes",)


def test_downgrade_keeps_existing_schema(sandbox: Sandbox, database: str) -> None:
    url = sandbox.url(database)
    with sandbox.connect(database) as conn:
        conn.execute("CREATE SCHEMA booking")

    helpers.upgrade(url, "head", schema="booking")
    helpers.downgrade(url, "base")

    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'booking'").fetchone() == (1,)


def test_downgrade_stops_at_foreign_key(sandbox: Sandbox, database: str) -> None:
    # An app table that references sessions stops the downgrade instead of
    # losing its constraint or its data.
    url = sandbox.url(database)
    helpers.upgrade(url, "head")
    with sandbox.connect(database) as conn:
        conn.execute("CREATE TABLE bookings (id int, session_id bigint REFERENCES sessions (id))")

    with pytest.raises(Exception, match="depend"):
        helpers.downgrade(url, "base")

    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('public.sessions')").fetchone() == ("sessions",)
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == (helpers.our_head(),)


def test_cli_upgrade_with_plain_postgresql_url(sandbox: Sandbox, database: str, cron_conn: psycopg.Connection) -> None:
    url = sandbox.url(database, driver="postgresql")

    result = helpers.run_alembic_cli(url, "upgrade", "head")

    assert result.returncode == 0, result.stderr
    assert len(tick_jobs(cron_conn, database)) == 1


def test_cli_rejects_invalid_schedule(sandbox: Sandbox, database: str, cron_conn: psycopg.Connection) -> None:
    url = sandbox.url(database)
    with sandbox.connect(database) as conn:
        pristine = helpers.catalog_snapshot(conn)

    result = helpers.run_alembic_cli(url, "-x", "schedule=61 * * * *", "upgrade", "head")

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "FAILED: invalid schedule '61 * * * *': minute 61 is outside 0-59" in output
    assert "Traceback" not in output
    with sandbox.connect(database) as conn:
        assert helpers.catalog_snapshot(conn) == pristine
        assert conn.execute("SELECT to_regclass('public.alembic_version')").fetchone() == (None,)
    assert helpers.jobs_for(cron_conn, database) == []


# -- same-database mode ------------------------------------------------------------


@pytest.fixture(scope="module")
def same_database_sandbox() -> Iterator[Sandbox]:
    """A server whose pg_cron lives in the app database itself."""
    with Sandbox(cron_database="app") as server:
        server.create_database("app")
        yield server


def test_same_database_round_trip(same_database_sandbox: Sandbox) -> None:
    server = same_database_sandbox
    url = server.url("app")
    with server.connect("app") as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        conn.execute("SELECT cron.schedule(%s, '0 3 * * *', 'VACUUM')", (FOREIGN_JOB,))
        pristine = helpers.catalog_snapshot(conn)

    helpers.upgrade(url, "head")
    with server.connect("app") as conn:
        assert tick_jobs(conn, "app") == [
            (job_name("app"), "* * * * *", 'CALL "public".advance_session_statuses_in_batches(batch_size => 10000)'),
        ]
        assert (FOREIGN_JOB, "0 3 * * *", "VACUUM") in helpers.jobs_for(conn, "app")
        jobs_at_head = helpers.jobs_for(conn, "app")
    helpers.downgrade(url, "session_status_0004")
    helpers.stamp(url, "session_status_0003")
    helpers.upgrade(url, "head")
    with server.connect("app") as conn:
        assert sorted(helpers.jobs_for(conn, "app")) == sorted(jobs_at_head)

    helpers.downgrade(url, "base")

    with server.connect("app") as conn:
        assert helpers.catalog_snapshot(conn) == pristine
        assert helpers.jobs_for(conn, "app") == [(FOREIGN_JOB, "0 3 * * *", "VACUUM")]


# -- preflight --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox_without_pg_cron() -> Iterator[Sandbox]:
    with Sandbox(preload_pg_cron=False) as server:
        server.create_database("app")
        yield server


def test_preflight_without_preloaded_pg_cron(sandbox_without_pg_cron: Sandbox) -> None:
    server = sandbox_without_pg_cron
    with server.connect("app") as conn:
        pristine = helpers.catalog_snapshot(conn)

    with pytest.raises(PreflightError, match="'pg_cron' is missing from shared_preload_libraries"):
        helpers.upgrade(server.url("app"), "head")

    with server.connect("app") as conn:
        assert helpers.catalog_snapshot(conn) == pristine
        assert conn.execute("SELECT to_regclass('public.alembic_version')").fetchone() == (None,)


def test_preflight_message_on_command_line(sandbox_without_pg_cron: Sandbox) -> None:
    result = helpers.run_alembic_cli(sandbox_without_pg_cron.url("app"), "upgrade", "head")

    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "FAILED: pg_cron is not loaded by this server" in output
    assert "Traceback" not in output


def test_preflight_errors_are_command_errors() -> None:
    # Alembic's command line prints CommandError messages without a traceback.
    assert issubclass(PreflightError, CommandError)
