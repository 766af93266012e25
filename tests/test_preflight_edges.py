"""Edge cases of the preflight and the settings that reach the server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from alembic import command

from session_status.cli import main
from session_status.config import Settings, validate_schedule
from session_status.errors import ConfigurationError, PreflightError
from session_status.pgcron import job_name
from session_status.sandbox import Sandbox
from tests import helpers


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("@HOURLY", "write it in lower case, as '@hourly'"),
        ("30 SECONDS", "write it in lower case, as '30 seconds'"),
        ("5/10 * * * *", "has a step after a single value"),
        ("\u0665 * * * *", "use ASCII characters"),
        ("\u00b2 * * * *", "use ASCII characters"),
    ],
)
def test_schedule_rejects_what_pg_cron_rejects(schedule: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid schedule") as caught:
        validate_schedule(schedule)
    assert message in str(caught.value)


@pytest.mark.parametrize("schedule", ["1-59/2 * * * *", "* * * JAN Mon", "0 0 * * SUN-sat"])
def test_schedule_accepts_ranges_with_steps_and_names(schedule: str) -> None:
    validate_schedule(schedule)


def test_empty_x_value_keeps_ini_value(sandbox: Sandbox, database: str, tmp_path: Path) -> None:
    ini = tmp_path / "alembic.ini"
    ini.write_text(helpers.ALEMBIC_INI.read_text().replace("schema = public", "schema = booking"), encoding="utf-8")
    config = helpers.alembic_config(sandbox.url(database), {"schema": ""})
    config.config_file_name = str(ini)
    config.file_config.read(str(ini))
    config.set_main_option("sqlalchemy.url", sandbox.url(database))

    command.upgrade(config, "session_status_0001")

    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('booking.sessions')").fetchone() == ("booking.sessions",)


def test_second_installation_in_other_schema_rejected(sandbox: Sandbox, database: str) -> None:
    url = sandbox.url(database)
    helpers.upgrade(url, "head")
    helpers.stamp(url, "base")

    with pytest.raises(Exception, match="session-status is already installed in schema public"):
        helpers.upgrade(url, "head", schema="tenant2")

    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('tenant2.sessions')").fetchone() == (None,)


def test_existing_sessions_table_rejected(sandbox: Sandbox, database: str) -> None:
    with sandbox.connect(database) as conn:
        conn.execute("CREATE TABLE sessions (id int)")

    with pytest.raises(Exception, match="a table named sessions already exists in schema public"):
        helpers.upgrade(sandbox.url(database), "head")


def test_unschedule_removes_jobs_of_every_visible_role(
    sandbox: Sandbox, database: str, cron_conn: psycopg.Connection
) -> None:
    url = sandbox.url(database)
    helpers.upgrade(url, "session_status_0004")
    cron_conn.execute("CREATE ROLE other_scheduler LOGIN")
    try:
        # The same job name scheduled again by another role, as after a stamp.
        cron_conn.execute(
            "SELECT cron.schedule_in_database(%s, '* * * * *', 'SELECT 1', %s, 'other_scheduler', true)",
            (job_name(database), database),
        )
        assert len(helpers.jobs_for(cron_conn, database)) == 2

        helpers.downgrade(url, "session_status_0003")

        assert helpers.jobs_for(cron_conn, database) == []
    finally:
        cron_conn.execute("DELETE FROM cron.job WHERE username = 'other_scheduler'")
        cron_conn.execute("DROP ROLE other_scheduler")


def test_cron_database_url_to_wrong_database(sandbox: Sandbox, database: str, cron_conn: psycopg.Connection) -> None:
    with sandbox.connect(database) as conn:
        pristine = helpers.catalog_snapshot(conn)

    with pytest.raises(ConfigurationError, match="it connects to database 'template1', but pg_cron runs in 'postgres'"):
        helpers.upgrade(sandbox.url(database), "head", cron_database_url=sandbox.url("template1"))

    with sandbox.connect(database) as conn:
        assert helpers.catalog_snapshot(conn) == pristine
    assert helpers.jobs_for(cron_conn, database) == []


@pytest.fixture(scope="module")
def other_server() -> Iterator[Sandbox]:
    with Sandbox() as server:
        yield server


def test_cron_database_url_to_other_server(
    sandbox: Sandbox, other_server: Sandbox, database: str, cron_conn: psycopg.Connection
) -> None:
    with pytest.raises(ConfigurationError, match="it reaches another PostgreSQL server"):
        helpers.upgrade(sandbox.url(database), "head", cron_database_url=other_server.url("postgres"))

    assert helpers.jobs_for(cron_conn, database) == []
    with other_server.connect("postgres") as conn:
        assert conn.execute("SELECT to_regclass('cron.job')").fetchone() == (None,)


@pytest.fixture
def same_database_server() -> Iterator[Sandbox]:
    with Sandbox(cron_database="app") as server:
        server.create_database("app")
        yield server


def test_old_installed_pg_cron_rejected(same_database_server: Sandbox) -> None:
    with same_database_server.connect("app") as conn:
        conn.execute("CREATE EXTENSION pg_cron VERSION '1.3'")
        pristine = helpers.catalog_snapshot(conn)

    with pytest.raises(
        PreflightError, match=r"is at version 1.3, but session-status needs 1.4 .*ALTER EXTENSION pg_cron UPDATE"
    ):
        helpers.upgrade(same_database_server.url("app"), "head")

    with same_database_server.connect("app") as conn:
        assert helpers.catalog_snapshot(conn) == pristine


def test_schedule_after_extension_dropped(same_database_server: Sandbox) -> None:
    url = same_database_server.url("app")
    helpers.upgrade(url, "session_status_0003")
    with same_database_server.connect("app") as conn:
        conn.execute("DROP EXTENSION pg_cron")

    with pytest.raises(PreflightError, match="the pg_cron extension does not exist in database 'app'"):
        helpers.upgrade(url, "session_status_0004")


def test_preload_given_as_library_path() -> None:
    with Sandbox(settings={"shared_preload_libraries": "'$libdir/pg_cron'"}) as server:
        server.create_database("app")
        helpers.upgrade(server.url("app"), "session_status_0004")
        with server.connect("postgres") as conn:
            assert len(helpers.jobs_for(conn, "app")) == 1


def test_downgrade_without_preloaded_pg_cron(same_database_server: Sandbox) -> None:
    url = same_database_server.url("app")
    helpers.upgrade(url, "session_status_0004")
    same_database_server.configure({"shared_preload_libraries": "''"})
    same_database_server.restart()

    with pytest.raises(PreflightError, match="this server no longer loads pg_cron"):
        helpers.downgrade(url, "session_status_0003")

    with same_database_server.connect("app") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("session_status_0004",)
        assert len(helpers.jobs_for(conn, "app")) == 1


@pytest.mark.parametrize("schema", ["information_schema", "cron"])
def test_schema_of_postgres_or_pg_cron_rejected(schema: str) -> None:
    with pytest.raises(ConfigurationError, match=f"invalid schema '{schema}': it belongs to PostgreSQL or pg_cron"):
        Settings(schema=schema)


def test_unknown_x_argument_warns(sandbox: Sandbox, database: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="session_status.config"):
        helpers.upgrade(sandbox.url(database), "session_status_0001", scheme="booking")

    assert "ignoring -x argument(s) scheme: session-status reads only schema" in caplog.text
    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('public.sessions')").fetchone() == ("sessions",)


def test_reinstall_after_stamp_base_hints_stamp(sandbox: Sandbox, database: str) -> None:
    url = sandbox.url(database)
    helpers.upgrade(url, "session_status_0001")
    helpers.stamp(url, "base")

    with pytest.raises(Exception, match="session-status is already installed in schema public") as caught:
        helpers.upgrade(url, "session_status_0001")
    assert "alembic stamp REVISION" in str(caught.value)


def test_job_name_taken_by_other_database(sandbox: Sandbox, cron_conn: psycopg.Connection) -> None:
    # "session_status:app:retention" is both the retention job of "app" and
    # the tick job of a database called "app:retention".
    first, second = "t_jobname_app", "t_jobname_app:retention"
    for name in (first, second):
        sandbox.drop_database(name)
        sandbox.create_database(name)
    try:
        helpers.upgrade(sandbox.url(first), "head")
        before = cron_conn.execute("SELECT jobid, jobname, database, command FROM cron.job ORDER BY jobid").fetchall()

        with pytest.raises(ConfigurationError, match="already belongs to a job that runs in database 't_jobname_app'"):
            helpers.upgrade(sandbox.url(second.replace(":", "%3A")), "head")

        after = cron_conn.execute("SELECT jobid, jobname, database, command FROM cron.job ORDER BY jobid").fetchall()
        assert after == before
    finally:
        for name in (first, second):
            cron_conn.execute("DELETE FROM cron.job WHERE database = %s", (name,))
            sandbox.drop_database(name)


def test_tick_cli_rejects_future_instant(sandbox: Sandbox, head_database: str) -> None:
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    with sandbox.connect(head_database) as conn:
        conn.execute(
            "INSERT INTO sessions (starts_at, ends_at) VALUES (now() + interval '1 hour', now() + interval '2 hours')"
        )

    code = main(["tick", "--database-url", sandbox.url(head_database), "--as-of", future])

    assert code == 1
    with sandbox.connect(head_database) as conn:
        assert conn.execute("SELECT status FROM sessions").fetchall() == [("scheduled",)]

    code = main(["tick", "--database-url", sandbox.url(head_database), "--as-of", future, "--allow-future"])

    assert code == 0
    with sandbox.connect(head_database) as conn:
        assert conn.execute("SELECT status FROM sessions").fetchall() == [("completed",)]
