"""The real pg_cron launcher runs the job: the one test that waits for a tick."""

from __future__ import annotations

import time
from datetime import timedelta

import psycopg
import pytest

from session_status.pgcron import job_name
from session_status.sandbox import Sandbox
from tests import helpers

POLL_SECONDS = 75


@pytest.mark.slow
def test_launcher_opens_due_session(sandbox: Sandbox, database: str, cron_conn: psycopg.Connection) -> None:
    helpers.upgrade(sandbox.url(database), "head")
    jobid = cron_conn.execute("SELECT jobid FROM cron.job WHERE jobname = %s", (job_name(database),)).fetchone()[0]

    with sandbox.connect(database) as conn:
        committed_at = conn.execute("SELECT now()").fetchone()[0]
        session_id = conn.execute(
            "INSERT INTO sessions (starts_at, ends_at) VALUES (now() - interval '1 second', now() + interval '1 hour') "
            "RETURNING id"
        ).fetchone()[0]

        deadline = time.monotonic() + POLL_SECONDS
        status = "scheduled"
        while time.monotonic() < deadline and status == "scheduled":
            time.sleep(1)
            status = conn.execute("SELECT status FROM sessions WHERE id = %s", (session_id,)).fetchone()[0]

    assert status == "open"
    run = cron_conn.execute(
        "SELECT status, return_message, database FROM cron.job_run_details "
        "WHERE jobid = %s AND start_time >= %s ORDER BY runid LIMIT 1",
        (jobid, committed_at - timedelta(seconds=1)),
    ).fetchone()
    assert run == ("succeeded", "CALL", database)
