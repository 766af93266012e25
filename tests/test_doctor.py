"""``session-status doctor``: each check against real servers in the state it reports."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from session_status.cli import main
from session_status.doctor import Check, Level, exit_code, run_checks
from session_status.listener import Listener
from session_status.pgcron import job_name
from session_status.sandbox import Sandbox
from tests import helpers

IDLE_SCHEDULE = "0 0 1 1 *"
MINUTE = timedelta(minutes=1)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def levels(checks: list[Check]) -> dict[str, str]:
    return {check.name: check.level.value for check in checks}


@pytest.fixture(scope="module")
def private_sandbox() -> Iterator[Sandbox]:
    """A server of this module only, whose launcher the tests may stop."""
    with Sandbox(cron_database="postgres") as server:
        server.create_database("app")
        helpers.upgrade(server.url("app"), "head", schedule=IDLE_SCHEDULE)
        yield server


def test_doctor_fails_without_pg_cron() -> None:
    with Sandbox(preload_pg_cron=False) as server:
        checks = run_checks(server.conninfo("postgres"))

    found = by_name(checks)
    assert found["pg_cron"].level is Level.FAIL
    assert "shared_preload_libraries" in found["pg_cron"].fix
    assert found["cron.database_name"].level is Level.FAIL
    assert found["lag"].level is Level.FAIL
    assert found["revisions"].level is Level.FAIL
    assert "launcher" not in found
    assert exit_code(checks) == 1


def test_doctor_fails_after_launcher_stops(private_sandbox: Sandbox) -> None:
    before = by_name(run_checks(private_sandbox.conninfo("app")))
    assert before["launcher"].level is Level.OK

    with private_sandbox.connect("postgres") as conn:
        stopped = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'"
        ).fetchall()
    assert stopped == [(True,)]
    # Termination is asynchronous: wait until the process is gone.
    with private_sandbox.connect("postgres") as conn:
        for _ in range(100):
            alive = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'"
            ).fetchone()
            if alive == (0,):
                break
            time.sleep(0.1)

    checks = run_checks(private_sandbox.conninfo("app"))

    assert by_name(checks)["launcher"].level is Level.FAIL
    assert "restart PostgreSQL" in by_name(checks)["launcher"].fix
    assert exit_code(checks) == 1


def test_doctor_reports_missing_job(sandbox: Sandbox, head_database: str) -> None:
    checks = by_name(run_checks(sandbox.conninfo(head_database)))

    assert checks["pg_cron"].level is Level.OK
    assert checks["cron.database_name"].level is Level.OK
    assert checks["job"].level is Level.FAIL
    assert job_name(head_database) in checks["job"].detail
    assert checks["retention jobs"].level is Level.WARN
    assert checks["launcher"].level is Level.OK
    assert checks["revisions"].level is Level.OK


def test_doctor_reports_inactive_job(sandbox: Sandbox, cron_conn: psycopg.Connection, database: str) -> None:
    helpers.upgrade(sandbox.url(database), "head", schedule=IDLE_SCHEDULE)
    cron_conn.execute("UPDATE cron.job SET active = false WHERE jobname = %s", (job_name(database),))

    check = by_name(run_checks(sandbox.conninfo(database)))["job"]

    assert check.level is Level.FAIL
    assert "inactive" in check.detail
    assert "cron.alter_job" in check.fix


def test_doctor_compares_expected_schedule(sandbox: Sandbox, database: str) -> None:
    helpers.upgrade(sandbox.url(database), "head", schedule=IDLE_SCHEDULE)

    matching = by_name(run_checks(sandbox.conninfo(database), expected_schedule=IDLE_SCHEDULE))["job"]
    other = by_name(run_checks(sandbox.conninfo(database), expected_schedule="* * * * *"))["job"]

    assert matching.level is Level.OK
    assert other.level is Level.WARN
    assert "expected '* * * * *'" in other.detail


def test_doctor_reports_failed_last_run(sandbox: Sandbox, cron_conn: psycopg.Connection, database: str) -> None:
    helpers.upgrade(sandbox.url(database), "head", schedule=IDLE_SCHEDULE)
    jobid = cron_conn.execute("SELECT jobid FROM cron.job WHERE jobname = %s", (job_name(database),)).fetchone()
    assert jobid is not None
    cron_conn.execute(
        "INSERT INTO cron.job_run_details (jobid, job_pid, database, username, command, status, return_message, "
        "start_time, end_time) VALUES (%s, 1, %s, 'postgres', 'CALL x()', 'failed', 'ERROR: boom', now(), now())",
        (jobid[0], database),
    )

    check = by_name(run_checks(sandbox.conninfo(database)))["last run"]

    assert check.level is Level.FAIL
    assert "ERROR: boom" in check.detail


@pytest.mark.parametrize(("age", "expected"), [(30, "OK"), (5 * 60, "WARN"), (3 * 3600, "FAIL")])
def test_doctor_lag_levels(head_conn: psycopg.Connection, head_database: str, age: int, expected: str) -> None:
    head_conn.execute(
        "INSERT INTO sessions (starts_at, ends_at) VALUES (now() - interval '1 day', now() - %s)",
        (timedelta(seconds=age),),
    )
    dsn = head_conn.info.dsn

    check = by_name(run_checks(dsn, max_lag=timedelta(minutes=2)))["lag"]

    assert check.level.value == expected
    assert "1 transition(s) overdue" in check.detail


def test_doctor_reports_revisions_behind(sandbox: Sandbox, migrated_database: str) -> None:
    check = by_name(run_checks(sandbox.conninfo(migrated_database)))["revisions"]

    assert check.level is Level.WARN
    assert "current session_status_0003" in check.detail


def test_doctor_without_stats_privilege_warns(sandbox: Sandbox, head_database: str) -> None:
    with sandbox.connect(head_database) as owner:
        owner.execute("CREATE ROLE doctor_reader LOGIN")
    try:
        checks = by_name(run_checks(sandbox.conninfo(head_database, user="doctor_reader")))
    finally:
        with sandbox.connect(head_database) as owner:
            owner.execute("DROP ROLE doctor_reader")

    assert checks["launcher"].level is Level.WARN
    assert "pg_read_all_stats" in checks["launcher"].fix
    assert checks["job"].level is Level.FAIL
    assert "USAGE on schema cron" in checks["job"].fix
    assert checks["lag"].level is Level.FAIL


def test_doctor_cli_json(sandbox: Sandbox, head_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--json", "--database-url", sandbox.url(head_database)])

    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["ok"] is False
    assert {"name": "launcher", "level": "OK"}.items() <= next(
        c for c in report["checks"] if c["name"] == "launcher"
    ).items()


def test_doctor_cli_lines(sandbox: Sandbox, head_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--database-url", sandbox.url(head_database)])

    out = capsys.readouterr().out
    assert code == 1
    assert any(line.startswith("FAIL job") for line in out.splitlines())
    assert any(line.startswith("OK   launcher") for line in out.splitlines())
    assert "fix: run `alembic upgrade heads`" in out


@pytest.mark.slow
def test_doctor_healthy_after_real_run(sandbox: Sandbox, cron_conn: psycopg.Connection, database: str) -> None:
    helpers.upgrade(sandbox.url(database), "head")
    with sandbox.connect(database) as app:
        app.execute(
            "INSERT INTO sessions (starts_at, ends_at) VALUES (now() - interval '1 minute', now() + interval '1 hour')"
        )
    listener = Listener(sandbox.conninfo(database), after_id=0)
    jobid = cron_conn.execute("SELECT jobid FROM cron.job WHERE jobname = %s", (job_name(database),)).fetchone()
    assert jobid is not None

    # The job runs at the start of every minute; allow two.
    deadline = datetime.now(UTC) + 2 * MINUTE + 15 * timedelta(seconds=1)
    run = None
    while run is None and datetime.now(UTC) < deadline:
        run = cron_conn.execute(
            "SELECT status FROM cron.job_run_details WHERE jobid = %s AND status IN ('succeeded', 'failed')",
            (jobid[0],),
        ).fetchone()
        time.sleep(1)
    assert run == ("succeeded",)

    with listener:
        delivered = list(listener.transitions(catch_up_only=True))
    checks = run_checks(sandbox.conninfo(database), expected_schedule="* * * * *")

    assert [(t.from_status, t.to_status) for t in delivered] == [("scheduled", "open")]
    assert levels(checks) == {check.name: "OK" for check in checks}
    assert exit_code(checks) == 0


def test_doctor_fails_when_cron_database_unreachable(sandbox: Sandbox, head_database: str) -> None:
    missing = sandbox.conninfo("no_such_database")

    checks = by_name(run_checks(sandbox.conninfo(head_database), cron_conninfo=missing))

    assert checks["cron.database_name"].level is Level.FAIL
    assert "no_such_database" in checks["cron.database_name"].detail
    assert "--cron-database-url" in checks["cron.database_name"].fix
    assert "job" not in checks
    assert checks["lag"].level is Level.OK
