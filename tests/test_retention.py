"""Revision 0006: the retention jobs for the transition history and cron.job_run_details."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from session_status.config import Settings
from session_status.errors import ConfigurationError
from session_status.pgcron import job_name
from session_status.sandbox import Sandbox
from tests import helpers

IDLE_SCHEDULE = "0 0 1 1 *"
DAY = timedelta(days=1)


def job(cron_conn: psycopg.Connection, name: str) -> tuple[int, str, str]:
    row = cron_conn.execute(
        "SELECT jobid, database, command FROM cron.job WHERE jobname = %s AND username = current_user", (name,)
    ).fetchone()
    assert row is not None, f"no pg_cron job {name!r}"
    return int(row[0]), str(row[1]), str(row[2])


def run_job_command(sandbox: Sandbox, cron_conn: psycopg.Connection, name: str) -> None:
    """Run a job's command in its database, as pg_cron would."""
    _jobid, database, command = job(cron_conn, name)
    with sandbox.connect(database) as conn:
        conn.execute(command)


def insert_history(conn: psycopg.Connection, age: timedelta) -> int:
    row = conn.execute(
        "INSERT INTO session_status_transitions (session_id, from_status, to_status, due_at, as_of, applied_at) "
        "VALUES (1, 'scheduled', 'open', now() - %s, now() - %s, now() - %s) RETURNING id",
        (age, age, age),
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_run(cron_conn: psycopg.Connection, jobid: int, age: timedelta) -> int:
    row = cron_conn.execute(
        "INSERT INTO cron.job_run_details (jobid, job_pid, database, username, command, status, "
        "return_message, start_time, end_time) "
        "VALUES (%s, 1, 'postgres', 'postgres', 'SELECT 1', 'succeeded', '1 row', now() - %s, now() - %s) "
        "RETURNING runid",
        (jobid, age, age),
    ).fetchone()
    assert row is not None
    return int(row[0])


def surviving_runs(cron_conn: psycopg.Connection, runids: list[int]) -> set[int]:
    rows = cron_conn.execute("SELECT runid FROM cron.job_run_details WHERE runid = ANY(%s)", (runids,)).fetchall()
    return {int(row[0]) for row in rows}


@pytest.fixture
def retained_database(sandbox: Sandbox, database: str) -> str:
    """The test database at head, with a retention of 2 days and an idle tick schedule."""
    helpers.upgrade(sandbox.url(database), "head", schedule=IDLE_SCHEDULE, retention="2 days")
    return database


@pytest.fixture
def foreign_job(cron_conn: psycopg.Connection) -> Iterator[int]:
    """A pg_cron job of someone else, in pg_cron's database."""
    row = cron_conn.execute("SELECT cron.schedule('someone-elses-job', %s, 'SELECT 1')", (IDLE_SCHEDULE,)).fetchone()
    assert row is not None
    try:
        yield int(row[0])
    finally:
        cron_conn.execute("DELETE FROM cron.job_run_details WHERE jobid = %s", (row[0],))
        cron_conn.execute("SELECT cron.unschedule(%s::bigint)", (row[0],))


def test_retention_jobs_scheduled_per_database(cron_conn: psycopg.Connection, retained_database: str) -> None:
    _id, history_database, history_command = job(cron_conn, job_name(retained_database, "retention"))
    _id, details_database, details_command = job(cron_conn, job_name(retained_database, "cron-retention"))

    assert history_database == retained_database
    assert history_command == """SELECT "public".purge_session_status_transitions(CAST('2 days' AS interval))"""
    assert details_database == "postgres"
    assert "DELETE FROM cron.job_run_details" in details_command
    assert "'2 days'" in details_command


def test_history_retention_deletes_old_rows(
    sandbox: Sandbox, cron_conn: psycopg.Connection, retained_database: str
) -> None:
    with sandbox.connect(retained_database) as app:
        old = [insert_history(app, 3 * DAY), insert_history(app, 2 * DAY + timedelta(minutes=1))]
        recent = [insert_history(app, 2 * DAY - timedelta(minutes=1)), insert_history(app, timedelta(0))]

        run_job_command(sandbox, cron_conn, job_name(retained_database, "retention"))

        kept = [row[0] for row in app.execute("SELECT id FROM session_status_transitions ORDER BY id")]
    assert kept == recent
    assert not set(old) & set(kept)


def test_run_details_retention_keeps_foreign_rows(
    sandbox: Sandbox, cron_conn: psycopg.Connection, retained_database: str, foreign_job: int
) -> None:
    tick_job, _database, _command = job(cron_conn, job_name(retained_database))
    old_ours = insert_run(cron_conn, tick_job, 3 * DAY)
    recent_ours = insert_run(cron_conn, tick_job, DAY)
    old_foreign = insert_run(cron_conn, foreign_job, 30 * DAY)

    run_job_command(sandbox, cron_conn, job_name(retained_database, "cron-retention"))

    kept = surviving_runs(cron_conn, [old_ours, recent_ours, old_foreign])
    assert old_ours not in kept
    assert recent_ours in kept
    assert old_foreign in kept


def test_run_details_retention_ignores_other_databases(
    sandbox: Sandbox, cron_conn: psycopg.Connection, retained_database: str
) -> None:
    # pg_cron keeps one job per name and role, so another role may own a job
    # of the same name that runs in another database: it is not ours.
    cron_conn.execute("CREATE ROLE other_app LOGIN")
    other = cron_conn.execute(
        "SELECT cron.schedule_in_database(%s, %s, 'SELECT 1', 'postgres', 'other_app', true)",
        (job_name(retained_database), IDLE_SCHEDULE),
    ).fetchone()
    assert other is not None
    try:
        ours, database, _command = job(cron_conn, job_name(retained_database))
        assert (ours, database) != (int(other[0]), "postgres")
        old_other = insert_run(cron_conn, int(other[0]), 30 * DAY)

        run_job_command(sandbox, cron_conn, job_name(retained_database, "cron-retention"))

        assert surviving_runs(cron_conn, [old_other]) == {old_other}
    finally:
        cron_conn.execute("DELETE FROM cron.job_run_details WHERE jobid = %s", (other[0],))
        cron_conn.execute("DELETE FROM cron.job WHERE jobid = %s", (other[0],))
        cron_conn.execute("DROP ROLE other_app")


def test_purge_rejects_non_positive_age(sandbox: Sandbox, head_database: str) -> None:
    with sandbox.connect(head_database) as app, pytest.raises(psycopg.errors.InvalidParameterValue):
        app.execute("SELECT purge_session_status_transitions(interval '0')")


def test_downgrade_removes_retention_jobs(
    sandbox: Sandbox, cron_conn: psycopg.Connection, retained_database: str, foreign_job: int
) -> None:
    helpers.downgrade(sandbox.url(retained_database), "session_status_0005")

    names = {row[0] for row in cron_conn.execute("SELECT jobname FROM cron.job")}
    assert job_name(retained_database, "retention") not in names
    assert job_name(retained_database, "cron-retention") not in names
    assert job_name(retained_database) in names
    assert "someone-elses-job" in names
    with sandbox.connect(retained_database) as app:
        assert app.execute("SELECT to_regproc('purge_session_status_transitions')").fetchone() == (None,)


def test_retention_in_same_database_mode() -> None:
    with Sandbox(cron_database="app") as server:
        server.create_database("app")
        helpers.upgrade(server.url("app"), "head", schedule=IDLE_SCHEDULE, retention="1 hour")
        with server.connect("app") as conn:
            databases = dict(conn.execute("SELECT jobname, database FROM cron.job").fetchall())
            assert databases == {
                job_name("app"): "app",
                job_name("app", "retention"): "app",
                job_name("app", "cron-retention"): "app",
            }
            old_history = insert_history(conn, 2 * timedelta(hours=1))
            tick_job, _database, _command = job(conn, job_name("app"))
            old_run = insert_run(conn, tick_job, 2 * timedelta(hours=1))

            run_job_command(server, conn, job_name("app", "retention"))
            run_job_command(server, conn, job_name("app", "cron-retention"))

            history = conn.execute("SELECT id FROM session_status_transitions WHERE id = %s", (old_history,))
            assert history.fetchall() == []
            assert surviving_runs(conn, [old_run]) == set()


@pytest.mark.parametrize("value", ["14 days", "1 month", "2 weeks 3 days", "36 hours", "1 Year", "90 minutes"])
def test_retention_setting_accepts_intervals(value: str) -> None:
    assert Settings(retention=value).retention == value


@pytest.mark.parametrize(
    "value", ["", "14", "days", "0 days", "-1 day", "1.5 days", "14 dayz", "1 day'; DROP TABLE x; --", "P14D"]
)
def test_retention_setting_rejects_invalid(value: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid retention"):
        Settings(retention=value)


def test_retention_setting_from_alembic_x(sandbox: Sandbox, database: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid retention '0 hours'"):
        helpers.upgrade(sandbox.url(database), "head", schedule=IDLE_SCHEDULE, retention="0 hours")
