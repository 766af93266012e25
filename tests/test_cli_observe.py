"""The tick, status and listen commands against a head-migrated database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from session_status.cli import main
from session_status.sandbox import Sandbox
from tests.test_tick import insert_session

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_tick_cli_prints_transitions(
    sandbox: Sandbox, head_conn: psycopg.Connection, head_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    opening = insert_session(head_conn, T0 - HOUR, T0 + HOUR)
    completing = insert_session(head_conn, T0 - 3 * HOUR, T0 - 2 * HOUR)

    code = main(["tick", "--database-url", sandbox.url(head_database), "--as-of", T0.isoformat()])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0] == "opened 1, completed 1"
    rows = [line.split() for line in lines[2:]]
    assert [row[1:4] for row in rows] == [
        [str(completing), "scheduled", "completed"],
        [str(opening), "scheduled", "open"],
    ]
    assert rows[0][-1] == "2:00:00"


def test_tick_cli_reports_only_its_own_transitions(
    sandbox: Sandbox, head_conn: psycopg.Connection, head_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    insert_session(head_conn, T0 - HOUR, T0 + HOUR)
    head_conn.execute("SELECT advance_session_statuses(%s)", (T0,))
    insert_session(head_conn, T0 - HOUR, T0 + 2 * HOUR)

    main(["tick", "--database-url", sandbox.url(head_database), "--as-of", T0.isoformat()])

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "opened 1, completed 0"
    assert len(lines) == 3


def test_tick_cli_before_history_revision(
    sandbox: Sandbox, migrated_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["tick", "--database-url", sandbox.url(migrated_database)])

    assert code == 0
    assert capsys.readouterr().out.splitlines() == ["opened 0, completed 0"]


def test_status_cli_json(
    sandbox: Sandbox, head_conn: psycopg.Connection, head_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    now = head_conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    insert_session(head_conn, now - HOUR, now + HOUR)
    insert_session(head_conn, now - HOUR, now + HOUR)
    insert_session(head_conn, now + HOUR, now + 2 * HOUR)
    head_conn.execute("SELECT advance_session_statuses()")
    insert_session(head_conn, now - HOUR, now + HOUR)

    code = main(["status", "--json", "--database-url", sandbox.url(head_database)])

    status = json.loads(capsys.readouterr().out)
    assert code == 0
    assert status["sessions"] == {"open": 2, "scheduled": 2}
    assert status["effective_sessions"] == {"open": 3, "scheduled": 1}
    assert status["overdue"] == 1
    assert status["transitions_last_hour"] == {"scheduled -> open": 2}
    assert [job["purpose"] for job in status["jobs"]] == ["tick", "history retention", "run-details retention"]
    assert all(job.get("jobid") is None for job in status["jobs"])


def test_status_cli_table(sandbox: Sandbox, database: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tests import helpers

    helpers.upgrade(sandbox.url(database), "head", schedule="0 0 1 1 *")

    code = main(["status", "--database-url", sandbox.url(database)])

    out = capsys.readouterr().out
    assert code == 0
    assert "pg_cron jobs" in out
    assert "0 0 1 1 *" in out
    assert "overdue transitions: 0" in out


def test_listen_cli_once_json(
    sandbox: Sandbox, head_conn: psycopg.Connection, head_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    session = insert_session(head_conn, T0 - HOUR, T0 + HOUR)
    head_conn.execute("SELECT advance_session_statuses(%s)", (T0,))
    head_conn.execute("SELECT advance_session_statuses(%s)", (T0 + 2 * HOUR,))

    code = main(["listen", "--database-url", sandbox.url(head_database), "--after-id", "0", "--once", "--json"])

    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [(row["session_id"], row["from_status"], row["to_status"]) for row in rows] == [
        (session, "scheduled", "open"),
        (session, "open", "completed"),
    ]
    assert rows[0]["id"] < rows[1]["id"]


def test_listen_cli_timeout_without_transitions(
    sandbox: Sandbox, head_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["listen", "--database-url", sandbox.url(head_database), "--timeout", "0.2"])

    assert code == 0
    assert capsys.readouterr().out == ""


def test_cli_requires_database_url(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["status"])

    assert code == 1
    assert "no database: pass --database-url URL or set DATABASE_URL" in capsys.readouterr().err
