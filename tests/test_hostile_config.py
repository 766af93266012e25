"""Hostile configuration values are rejected before any change; hostile database names are quoted."""

from __future__ import annotations

from urllib.parse import quote

import psycopg
import pytest

from session_status import pgcron
from session_status.config import MAX_IDENTIFIER_BYTES
from session_status.errors import ConfigurationError
from session_status.sandbox import Sandbox
from tests import catalog, helpers

# (setting, value, words the error must contain)
HOSTILE_VALUES = [
    ("schema", "public; DROP TABLE x", "invalid schema"),
    ("schema", '"quoted"', "invalid schema"),
    ("schema", "it's", "invalid schema"),
    ("schema", "back\\slash", "invalid schema"),
    ("schema", "sch\u00e9ma", "invalid schema"),
    ("schema", "s" * (MAX_IDENTIFIER_BYTES + 1), "63-byte identifier limit"),
    ("schema", "Sessions", "invalid schema"),
    ("schema", "select", "reserved word"),
    ("schema", "pg_temp", "reserved by PostgreSQL"),
    ("schedule", "* * * * *; DROP TABLE x", "expected 5 fields"),
    ("schedule", "* * * * *'); DROP TABLE x; --", "expected 5 fields"),
    ("schedule", "$$ * * * $$", "invalid value"),
    ("schedule", "99999999999999999999 * * * *", "outside 0-59"),
    ("schedule", "\u00b2 * * * *", "ASCII"),
    ("schedule", "* " * 200, "longer than the limit"),
    ("schedule", "@reboot", "periodically"),
    ("batch_size", "99999999999999999999999", "invalid batch_size"),
    ("batch_size", "1000001", "between 1 and 1000000"),
    ("batch_size", "-1", "invalid batch_size"),
    ("batch_size", "1e6", "invalid batch_size"),
    ("batch_size", "10; DROP TABLE x", "invalid batch_size"),
    ("row_level_security", "true; DROP TABLE x", "invalid row_level_security"),
    ("retention", "14 days'; DROP TABLE x; --", "invalid retention"),
    ("retention", "14 days') AND true OR ('1", "invalid retention"),
    ("retention", "0 days", "longer than zero"),
    ("cron_database_url", "mysql://root@127.0.0.1/postgres", "expected a postgresql:// URL"),
    ("cron_database_url", "postgresql://postgres@127.0.0.1:1/postgres", "cannot connect"),
]


State = tuple[set[tuple[str, ...]], bool, set[tuple[str, ...]], list[tuple[str, str, str]]]


def database_state(sandbox: Sandbox, database: str) -> State:
    """Return the app database's catalog, whether alembic_version exists, pg_cron's database's catalog and jobs.

    pg_cron's database is included because a run may create the extension there.
    """
    with sandbox.connect(database) as conn:
        snapshot = helpers.catalog_snapshot(conn)
        row = conn.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone()
    with sandbox.connect("postgres") as cron_conn:
        cron_snapshot = helpers.catalog_snapshot(cron_conn)
        has_cron = cron_conn.execute("SELECT to_regclass('cron.job') IS NOT NULL").fetchone()
        jobs = helpers.jobs_for(cron_conn, database) if has_cron == (True,) else []
    return snapshot, bool(row and row[0]), cron_snapshot, jobs


@pytest.mark.parametrize(("setting", "value", "message"), HOSTILE_VALUES)
def test_hostile_setting_rejected_before_change(
    sandbox: Sandbox, database: str, setting: str, value: str, message: str
) -> None:
    before = database_state(sandbox, database)

    result = helpers.run_alembic_cli(sandbox.url(database), "-x", f"{setting}={value}", "upgrade", "head")

    assert result.returncode != 0
    assert message in result.stderr
    after = database_state(sandbox, database)
    assert after == before
    assert after[1] is False
    assert after[3] == []


@pytest.mark.parametrize(
    "setting", ["schema", "schedule", "batch_size", "row_level_security", "cron_database_url", "retention"]
)
def test_nul_in_setting_rejected(sandbox: Sandbox, database: str, setting: str) -> None:
    # A command line cannot carry NUL, but an ini file or a caller of the Alembic API can.
    before = database_state(sandbox, database)

    with pytest.raises(ConfigurationError, match=f"invalid {setting}"):
        helpers.upgrade(sandbox.url(database), "head", **{setting: "a\x00b"})

    assert database_state(sandbox, database) == before


HOSTILE_DATABASE_NAMES = [
    'x"; DROP TABLE sessions; --',
    "it's \\ a \u00fcnicode name \u2603",
    # 63 bytes, the maximum: two-byte characters after a quote.
    '"' + "\u00e9" * 31,
]


def insert_run_record(cron_conn: psycopg.Connection, jobid: int, database: str) -> None:
    """Insert a finished run of ``jobid`` that is 30 days old, older than the default retention."""
    cron_conn.execute(
        "INSERT INTO cron.job_run_details (jobid, database, username, command, status, start_time, end_time) "
        "VALUES (%s, %s, current_user, 'run', 'succeeded', now() - interval '30 days', now() - interval '30 days')",
        (jobid, database),
    )


@pytest.mark.parametrize("name", HOSTILE_DATABASE_NAMES)
def test_hostile_database_name_quoted_in_job(sandbox: Sandbox, cron_conn: psycopg.Connection, name: str) -> None:
    assert len(name.encode()) <= MAX_IDENTIFIER_BYTES
    job_names = [pgcron.job_name(name, purpose) for purpose in catalog.JOB_PURPOSES]
    # A run record of no job of this database, which the run-record retention job must keep.
    foreign_jobid = -1
    sandbox.create_database(name)
    try:
        helpers.upgrade(sandbox.url(quote(name, safe="")), "head")

        jobs = {job[0]: job[1:4] for job in catalog.package_job_rows(cron_conn, name)}
        assert sorted(jobs) == sorted(job_names)
        for job_name in job_names:
            assert len(job_name.encode()) <= MAX_IDENTIFIER_BYTES
        tick_name, history_name, details_name = job_names
        assert jobs[tick_name] == (
            "* * * * *",
            'CALL "public".advance_session_statuses_in_batches(batch_size => 10000)',
            name,
        )
        assert jobs[history_name] == (
            "17 3 * * *",
            """SELECT "public".purge_session_status_transitions(CAST('14 days' AS interval))""",
            name,
        )
        details_schedule, details_command, details_database = jobs[details_name]
        assert details_schedule == "17 3 * * *"
        assert details_database == "postgres"

        with sandbox.connect(name) as conn:
            conn.execute(jobs[tick_name][1])
            assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
            assert conn.execute(jobs[history_name][1]).fetchone() == (0,)

        # The run-record command names the jobs by the hostile database name:
        # it must delete the old runs of all three and keep the foreign one.
        jobids = [
            row[0]
            for row in cron_conn.execute(
                "SELECT jobid FROM cron.job WHERE jobname = ANY(%s) ORDER BY jobid", (job_names,)
            ).fetchall()
        ]
        assert len(jobids) == 3
        for jobid in [*jobids, foreign_jobid]:
            insert_run_record(cron_conn, jobid, name)
        assert cron_conn.execute(details_command).rowcount == 3
        remaining = cron_conn.execute(
            "SELECT jobid FROM cron.job_run_details WHERE jobid = ANY(%s)", ([*jobids, foreign_jobid],)
        ).fetchall()
        assert remaining == [(foreign_jobid,)]
    finally:
        cron_conn.execute(
            "DELETE FROM cron.job_run_details WHERE jobid = %s OR jobid IN "
            "(SELECT jobid FROM cron.job WHERE database = %s OR jobname = ANY(%s))",
            (foreign_jobid, name, job_names),
        )
        cron_conn.execute("DELETE FROM cron.job WHERE database = %s OR jobname = ANY(%s)", (name, job_names))
        sandbox.drop_database(name)
