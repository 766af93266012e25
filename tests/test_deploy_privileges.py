"""Deploying as an ordinary role after a superuser installed pg_cron and granted what it needs.

The role owns its database, which gives it CREATE there and on schema
public (where Alembic keeps alembic_version), and nothing else: it cannot
read shared_preload_libraries or cron.database_name. Each missing grant must
fail the upgrade before any change, with an error that names the grant.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import psycopg
import pytest

from session_status import pgcron
from session_status.errors import PrivilegeError
from session_status.sandbox import Sandbox
from tests import catalog, helpers

APP_DATABASE = "app"
APP_SCHEMA = "app_data"
SCHEDULE_IN_DATABASE = "cron.schedule_in_database(text,text,text,text,text,boolean)"


def state(server: Sandbox, database: str, cron_database: str) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    with server.connect(database) as conn:
        app = helpers.catalog_snapshot(conn)
    with server.connect(cron_database) as conn:
        jobs = set(conn.execute("SELECT jobname, database, username FROM cron.job").fetchall())
    return app, jobs


def assert_deployed(server: Sandbox, database: str, cron_database: str, role: str) -> None:
    with server.connect(cron_database) as conn:
        jobs = [(job[0], job[3], job[4]) for job in catalog.package_job_rows(conn, database)]
    # The tick and the history retention job run in the app database, the
    # run-record retention job in pg_cron's database.
    assert jobs == sorted(
        [
            (pgcron.job_name(database), database, role),
            (pgcron.job_name(database, "retention"), database, role),
            (pgcron.job_name(database, "cron-retention"), cron_database, role),
        ]
    )
    with server.connect(database) as conn:
        tables = conn.execute(
            "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (APP_SCHEMA,)
        ).fetchall()
        assert tables == [("session_status_transitions", role), ("sessions", role)]
        views = conn.execute("SELECT viewname, viewowner FROM pg_views WHERE schemaname = %s", (APP_SCHEMA,))
        assert views.fetchall() == [("sessions_effective_status", role)]
    with server.connect(database, user=role) as conn:
        assert conn.execute(f"SELECT * FROM {APP_SCHEMA}.advance_session_statuses()").fetchone() == (0, 0)


# -- same database: pg_cron's database is the app database -------------------------------------


@pytest.fixture
def same_database_server() -> Iterator[Sandbox]:
    with Sandbox(cron_database=APP_DATABASE) as server:
        with server.connect() as admin:
            admin.execute("CREATE ROLE deployer LOGIN")
            admin.execute(f"CREATE DATABASE {APP_DATABASE} OWNER deployer")
        yield server


def upgrade_as_deployer(server: Sandbox, target: str = "head") -> None:
    helpers.upgrade(server.url(APP_DATABASE, user="deployer"), target, schema=APP_SCHEMA)


def test_same_database_without_extension_names_it(same_database_server: Sandbox) -> None:
    with same_database_server.connect(APP_DATABASE) as conn:
        before = helpers.catalog_snapshot(conn)

    # The role cannot read cron.database_name, so the error names pg_cron's
    # default database and says how to point at the right one.
    with pytest.raises(PrivilegeError, match=r"CREATE EXTENSION pg_cron SCHEMA pg_catalog;` in 'postgres'") as error:
        upgrade_as_deployer(same_database_server)
    assert "may not read cron.database_name" in str(error.value)
    assert "set cron_database_url" in str(error.value)

    with same_database_server.connect(APP_DATABASE) as conn:
        assert helpers.catalog_snapshot(conn) == before


def test_same_database_without_usage_names_it(same_database_server: Sandbox) -> None:
    with same_database_server.connect(APP_DATABASE) as admin:
        admin.execute("CREATE EXTENSION pg_cron SCHEMA pg_catalog")
    before = state(same_database_server, APP_DATABASE, APP_DATABASE)

    with pytest.raises(PrivilegeError, match=r"GRANT USAGE ON SCHEMA cron TO deployer;"):
        upgrade_as_deployer(same_database_server)

    assert state(same_database_server, APP_DATABASE, APP_DATABASE) == before


def test_same_database_deploy_as_owner_role(same_database_server: Sandbox) -> None:
    with same_database_server.connect(APP_DATABASE) as admin:
        admin.execute("CREATE EXTENSION pg_cron SCHEMA pg_catalog")
        admin.execute("GRANT USAGE ON SCHEMA cron TO deployer")

    upgrade_as_deployer(same_database_server)
    assert_deployed(same_database_server, APP_DATABASE, APP_DATABASE, "deployer")

    helpers.downgrade(same_database_server.url(APP_DATABASE, user="deployer"), "base", schema=APP_SCHEMA)
    _, jobs = state(same_database_server, APP_DATABASE, APP_DATABASE)
    assert jobs == set()
    with same_database_server.connect(APP_DATABASE) as conn:
        assert conn.execute(f"SELECT to_regnamespace('{APP_SCHEMA}')").fetchone() == (None,)


# -- cross database: pg_cron lives in postgres, the app in its own database -----------------------


@pytest.fixture
def deployer(sandbox: Sandbox, database: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """An ordinary role that owns ``database``; removed with its grants after the test."""
    role = "deployer_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]
    with sandbox.connect("postgres") as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_cron SCHEMA pg_catalog")
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f'ALTER DATABASE "{database}" OWNER TO {role}')
    try:
        yield role
    finally:
        with sandbox.connect(database) as admin:
            admin.execute(f"DROP OWNED BY {role}")
        with sandbox.connect("postgres") as admin:
            admin.execute(f'ALTER DATABASE "{database}" OWNER TO postgres')
            admin.execute("DELETE FROM cron.job WHERE username = %s", (role,))
            # Also revokes the grants on schema cron, its functions and the app database.
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_cross_database_without_usage_names_it(sandbox: Sandbox, database: str, deployer: str) -> None:
    before = state(sandbox, database, "postgres")

    with pytest.raises(PrivilegeError, match=rf"GRANT USAGE ON SCHEMA cron TO {deployer};"):
        helpers.upgrade(sandbox.url(database, user=deployer), "head", schema=APP_SCHEMA)

    assert state(sandbox, database, "postgres") == before


def test_cross_database_without_execute_names_it(sandbox: Sandbox, database: str, deployer: str) -> None:
    with sandbox.connect("postgres") as admin:
        admin.execute(f"GRANT USAGE ON SCHEMA cron TO {deployer}")
    before = state(sandbox, database, "postgres")

    expected = f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {deployer};"
    with pytest.raises(PrivilegeError, match=re.escape(expected)):
        helpers.upgrade(sandbox.url(database, user=deployer), "head", schema=APP_SCHEMA)

    assert state(sandbox, database, "postgres") == before


@pytest.mark.parametrize("explicit_url", [False, True], ids=["derived-url", "cron-database-url"])
def test_cross_database_deploy_as_owner_role(
    sandbox: Sandbox, database: str, deployer: str, explicit_url: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with sandbox.connect("postgres") as admin:
        admin.execute(f"GRANT USAGE ON SCHEMA cron TO {deployer}")
        admin.execute(f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {deployer}")
    x = {"schema": APP_SCHEMA}
    if explicit_url:
        x["cron_database_url"] = sandbox.url("postgres", user=deployer)

    helpers.upgrade(sandbox.url(database, user=deployer), "head", **x)
    assert_deployed(sandbox, database, "postgres", deployer)
    assert "the preload of pg_cron is not checked" in caplog.text

    helpers.downgrade(sandbox.url(database, user=deployer), "base", **x)
    with sandbox.connect("postgres") as conn:
        assert catalog.package_job_rows(conn, database) == []


def test_cross_database_job_runs_for_owner_role(sandbox: Sandbox, database: str, deployer: str) -> None:
    # The command pg_cron will run, executed as the owner role in the app database.
    with sandbox.connect("postgres") as admin:
        admin.execute(f"GRANT USAGE ON SCHEMA cron TO {deployer}")
        admin.execute(f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {deployer}")
    helpers.upgrade(sandbox.url(database, user=deployer), "head", schema=APP_SCHEMA)
    with sandbox.connect("postgres") as conn:
        ((command,),) = conn.execute(
            "SELECT command FROM cron.job WHERE jobname = %s AND database = %s",
            (pgcron.job_name(database), database),
        ).fetchall()

    with sandbox.connect(database, user=deployer) as conn:
        conn.execute(
            f"INSERT INTO {APP_SCHEMA}.sessions (starts_at, ends_at) "
            "VALUES (now() - interval '1 minute', now() + interval '1 hour')"
        )
        conn.execute(command)
        statuses = conn.execute(f"SELECT status FROM {APP_SCHEMA}.sessions").fetchall()
    assert statuses == [("open",)]


def test_cross_database_retention_runs_for_owner_role(sandbox: Sandbox, database: str, deployer: str) -> None:
    # The retention commands pg_cron will run, each executed as the owner
    # role in the database its job runs in, on one old and one recent row.
    with sandbox.connect("postgres") as admin:
        admin.execute(f"GRANT USAGE ON SCHEMA cron TO {deployer}")
        admin.execute(f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {deployer}")
    helpers.upgrade(sandbox.url(database, user=deployer), "head", schema=APP_SCHEMA)
    with sandbox.connect("postgres") as admin:
        jobs = {job[0]: job for job in catalog.package_job_rows(admin, database)}
        tick_id = admin.execute(
            "SELECT jobid FROM cron.job WHERE jobname = %s", (pgcron.job_name(database),)
        ).fetchone()[0]  # type: ignore[index]
        for age in ("30 days", "1 hour"):
            admin.execute(
                "INSERT INTO cron.job_run_details (jobid, database, username, command, status, start_time, end_time) "
                "VALUES (%s, %s, %s, 'tick', 'succeeded', now() - CAST(%s AS interval), now() - CAST(%s AS interval))",
                (tick_id, database, deployer, age, age),
            )
    _name, _schedule, history_command, history_database, *_ = jobs[pgcron.job_name(database, "retention")]
    _name, _schedule, details_command, details_database, *_ = jobs[pgcron.job_name(database, "cron-retention")]
    assert history_database == database
    assert details_database == "postgres"

    with sandbox.connect(database, user=deployer) as conn:
        for age in ("30 days", "1 hour"):
            conn.execute(
                f"INSERT INTO {APP_SCHEMA}.session_status_transitions "
                "(session_id, from_status, to_status, due_at, as_of, applied_at) "
                "VALUES (1, 'scheduled', 'open', now(), now(), now() - CAST(%s AS interval))",
                (age,),
            )
        assert conn.execute(history_command).fetchone() == (1,)
        assert conn.execute(f"SELECT count(*) FROM {APP_SCHEMA}.session_status_transitions").fetchone() == (1,)
    with sandbox.connect("postgres", user=deployer) as conn:
        assert conn.execute(details_command).rowcount == 1
    with sandbox.connect("postgres") as admin:
        kept = admin.execute("SELECT count(*) FROM cron.job_run_details WHERE jobid = %s", (tick_id,))
        assert kept.fetchone() == (1,)


def test_deployer_reads_no_settings(sandbox: Sandbox, database: str, deployer: str) -> None:
    # The premise of these tests: the role cannot read pg_cron's settings.
    with sandbox.connect(database, user=deployer) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT current_setting('cron.database_name')")


# -- pg_cron in a database other than postgres, named only by cron_database_url ----------------------

CRON_DATABASE = "cron_db"


@pytest.fixture
def named_cron_database_server() -> Iterator[Sandbox]:
    """A server whose pg_cron lives in ``cron_db``, with a deployer granted what the docs list."""
    with Sandbox(cron_database=CRON_DATABASE) as server:
        server.create_database(CRON_DATABASE)
        with server.connect(CRON_DATABASE) as admin:
            admin.execute("CREATE EXTENSION pg_cron SCHEMA pg_catalog")
            admin.execute("CREATE ROLE deployer LOGIN")
            admin.execute("GRANT USAGE ON SCHEMA cron TO deployer")
            admin.execute(f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO deployer")
            admin.execute(f"CREATE DATABASE {APP_DATABASE} OWNER deployer")
        yield server


def test_named_cron_database_round_trip(named_cron_database_server: Sandbox) -> None:
    server = named_cron_database_server
    url = server.url(APP_DATABASE, user="deployer")
    x = {"schema": APP_SCHEMA, "cron_database_url": server.url(CRON_DATABASE, user="deployer")}

    helpers.upgrade(url, "head", **x)
    assert_deployed(server, APP_DATABASE, CRON_DATABASE, "deployer")

    helpers.downgrade(url, "base", **x)
    with server.connect(CRON_DATABASE) as conn:
        assert catalog.package_job_rows(conn, APP_DATABASE) == []
