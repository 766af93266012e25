"""Hostile configuration values are rejected before any change; hostile database names are quoted."""

from __future__ import annotations

from urllib.parse import quote

import psycopg
import pytest

from session_status import pgcron
from session_status.config import MAX_IDENTIFIER_BYTES
from session_status.errors import ConfigurationError
from session_status.sandbox import Sandbox
from tests import helpers

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


@pytest.mark.parametrize("setting", ["schema", "schedule", "batch_size", "row_level_security", "cron_database_url"])
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


@pytest.mark.parametrize("name", HOSTILE_DATABASE_NAMES)
def test_hostile_database_name_quoted_in_job(sandbox: Sandbox, cron_conn: psycopg.Connection, name: str) -> None:
    assert len(name.encode()) <= MAX_IDENTIFIER_BYTES
    sandbox.create_database(name)
    try:
        helpers.upgrade(sandbox.url(quote(name, safe="")), "head")

        jobs = helpers.jobs_for(cron_conn, name)
        expected_name = pgcron.job_name(name)
        assert len(expected_name.encode()) <= MAX_IDENTIFIER_BYTES
        assert jobs == [
            (expected_name, "* * * * *", 'CALL "public".advance_session_statuses_in_batches(batch_size => 10000)')
        ]
        with sandbox.connect(name) as conn:
            conn.execute(jobs[0][2])
            assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
    finally:
        cron_conn.execute("DELETE FROM cron.job WHERE database = %s", (name,))
        sandbox.drop_database(name)
