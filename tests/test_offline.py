"""Offline (--sql) scripts: generated without a server, equivalent to the online run."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from session_status import pgcron
from session_status.sandbox import SUPERUSER, Sandbox
from tests import catalog, helpers

APP_DATABASE = "appdb"
# Nothing listens on port 1: the scripts must be generated without a server.
NO_SERVER_URL = "postgresql://nobody@127.0.0.1:1/appdb"


def generate(*args: str) -> str:
    result = helpers.run_alembic_cli(NO_SERVER_URL, *args, "--sql")
    assert result.returncode == 0, result.stderr
    return result.stdout


def psql(sandbox: Sandbox, database: str, script: str) -> subprocess.CompletedProcess[str]:
    assert sandbox.bindir is not None
    return subprocess.run(
        [
            str(sandbox.bindir / "psql"),
            "--no-psqlrc",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            sandbox.host,
            "-p",
            str(sandbox.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
        ],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def online_server() -> Iterator[Sandbox]:
    """A server whose app database is pg_cron's database, migrated online."""
    with Sandbox(cron_database=APP_DATABASE) as server:
        server.create_database(APP_DATABASE)
        yield server


@pytest.fixture(scope="module")
def offline_server() -> Iterator[Sandbox]:
    """A server whose app database is pg_cron's database, migrated with psql."""
    with Sandbox(cron_database=APP_DATABASE) as server:
        server.create_database(APP_DATABASE)
        yield server


@pytest.mark.parametrize(
    ("database", "purpose"),
    [
        ("app", ""),
        ("app", "retention"),
        ("d" * 48, ""),
        ("d" * 49, ""),
        ("d" * 63, ""),
        ("d" * 63, "retention"),
        ("ä" * 31, ""),
        ("x" + "ä" * 31, ""),
        ("日本語のデータベース名前はとても長いです", ""),
        ("emoji_\U0001f600" * 6, "history"),
    ],
)
def test_job_name_sql_matches_python(cron_conn: psycopg.Connection, database: str, purpose: str) -> None:
    expression = pgcron.job_name_sql("CAST(%(database)s AS text)", purpose)
    row = cron_conn.execute(f"SELECT {expression}", {"database": database}).fetchone()
    assert row is not None

    assert row[0] == pgcron.job_name(database, purpose)
    assert len(row[0].encode()) <= 63


def test_long_database_names_get_distinct_jobs(cron_conn: psycopg.Connection) -> None:
    names = ["d" * 62 + "a", "d" * 62 + "b"]
    expression = pgcron.job_name_sql("CAST(%(database)s AS text)")
    sql_names = [cron_conn.execute(f"SELECT {expression}", {"database": name}).fetchone()[0] for name in names]

    assert sql_names[0] != sql_names[1]


def test_offline_scripts_need_no_server() -> None:
    upgrade = generate("upgrade", "head")
    downgrade = generate("downgrade", "head:base")

    assert "cron.schedule(v_name, '* * * * *'" in upgrade
    assert "must run in pg_cron''s database" in upgrade
    assert "cron.unschedule(v_jobid)" in downgrade
    assert "DELETE FROM alembic_version" in downgrade


def test_offline_upgrade_matches_online(online_server: Sandbox, offline_server: Sandbox) -> None:
    helpers.upgrade(online_server.url(APP_DATABASE), "head")
    applied = psql(offline_server, APP_DATABASE, generate("upgrade", "head"))
    assert applied.returncode == 0, applied.stderr

    with online_server.connect(APP_DATABASE) as online, offline_server.connect(APP_DATABASE) as offline:
        online_catalog = catalog.full_snapshot(online)
        offline_catalog = catalog.full_snapshot(offline)
        online_jobs = catalog.job_rows(online, APP_DATABASE)
        offline_jobs = catalog.job_rows(offline, APP_DATABASE)
        offline_version = offline.execute("SELECT version_num FROM alembic_version").fetchall()

    assert offline_catalog - online_catalog == set()
    assert online_catalog - offline_catalog == set()
    assert offline_jobs == online_jobs
    assert sorted(job[0] for job in offline_jobs) == sorted(
        pgcron.job_name(APP_DATABASE, purpose) for purpose in ("", "retention", "cron-retention")
    )
    assert offline_version == [(helpers.our_head(),)]

    helpers.downgrade(online_server.url(APP_DATABASE), "base")
    removed = psql(offline_server, APP_DATABASE, generate("downgrade", "head:base"))
    assert removed.returncode == 0, removed.stderr

    with online_server.connect(APP_DATABASE) as online, offline_server.connect(APP_DATABASE) as offline:
        assert catalog.full_snapshot(offline) == catalog.full_snapshot(online)
        assert catalog.job_rows(offline, APP_DATABASE) == []
        assert offline.execute("SELECT version_num FROM alembic_version").fetchall() == []


def test_offline_downgrade_tolerates_missing_job(offline_server: Sandbox) -> None:
    with offline_server.connect(APP_DATABASE) as conn:
        # An offline script creates alembic_version, which an earlier test may have left.
        conn.execute("DROP TABLE IF EXISTS alembic_version")
    applied = psql(offline_server, APP_DATABASE, generate("upgrade", "head"))
    assert applied.returncode == 0, applied.stderr
    with offline_server.connect(APP_DATABASE) as conn:
        # Removed by hand: the downgrade must still succeed.
        conn.execute("SELECT cron.unschedule(%s)", (pgcron.job_name(APP_DATABASE),))

    removed = psql(offline_server, APP_DATABASE, generate("downgrade", "head:base"))

    assert removed.returncode == 0, removed.stderr
    with offline_server.connect(APP_DATABASE) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == []
        assert conn.execute("SELECT to_regclass('public.sessions')").fetchone() == (None,)


def test_offline_job_script_rejects_other_database(
    sandbox: Sandbox, migrated_database: str, cron_conn: psycopg.Connection
) -> None:
    # The session sandbox runs pg_cron in "postgres": the app database is another one.
    script = generate("upgrade", "session_status_0003:session_status_0004")
    applied = psql(sandbox, migrated_database, script)

    assert applied.returncode != 0
    assert "must run in pg_cron's database postgres, not in " + migrated_database in applied.stderr
    assert "Run alembic upgrade/downgrade online" in applied.stderr
    assert helpers.jobs_for(cron_conn, migrated_database) == []
    with sandbox.connect(migrated_database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("session_status_0003",)]


def test_offline_downgrade_rejects_other_database(sandbox: Sandbox, migrated_database: str) -> None:
    script = generate("downgrade", "session_status_0004:session_status_0003")
    removed = psql(sandbox, migrated_database, script)

    assert removed.returncode != 0
    assert "must run in pg_cron's database postgres" in removed.stderr


def test_offline_script_file_is_valid_psql_input(tmp_path: Path) -> None:
    script = tmp_path / "upgrade.sql"
    script.write_text(generate("upgrade", "head"))

    assert script.read_text().rstrip().endswith("COMMIT;")


def test_full_offline_script_stops_in_app_database(sandbox: Sandbox, database: str) -> None:
    applied = psql(sandbox, database, generate("upgrade", "head"))

    assert applied.returncode != 0
    assert "this database is not pg_cron's database" in applied.stderr
    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('public.sessions')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass('public.alembic_version')").fetchone() == (None,)
