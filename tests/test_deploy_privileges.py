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

from session_status.errors import PrivilegeError
from session_status.sandbox import Sandbox
from tests import helpers

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
        jobs = conn.execute("SELECT database, username FROM cron.job WHERE database = %s", (database,)).fetchall()
    assert jobs == [(database, role)]
    with server.connect(database) as conn:
        owner = conn.execute(f"SELECT tableowner FROM pg_tables WHERE schemaname = '{APP_SCHEMA}'").fetchall()
        assert owner == [(role,)]
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
        assert helpers.jobs_for(conn, database) == []


def test_cross_database_job_runs_for_owner_role(sandbox: Sandbox, database: str, deployer: str) -> None:
    # The command pg_cron will run, executed as the owner role in the app database.
    with sandbox.connect("postgres") as admin:
        admin.execute(f"GRANT USAGE ON SCHEMA cron TO {deployer}")
        admin.execute(f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {deployer}")
    helpers.upgrade(sandbox.url(database, user=deployer), "head", schema=APP_SCHEMA)
    with sandbox.connect("postgres") as conn:
        ((command,),) = conn.execute("SELECT command FROM cron.job WHERE database = %s", (database,)).fetchall()

    with sandbox.connect(database, user=deployer) as conn:
        conn.execute(
            f"INSERT INTO {APP_SCHEMA}.sessions (starts_at, ends_at) "
            "VALUES (now() - interval '1 minute', now() + interval '1 hour')"
        )
        conn.execute(command)
        statuses = conn.execute(f"SELECT status FROM {APP_SCHEMA}.sessions").fetchall()
    assert statuses == [("open",)]


def test_deployer_reads_no_settings(sandbox: Sandbox, database: str, deployer: str) -> None:
    # The premise of these tests: the role cannot read pg_cron's settings.
    with sandbox.connect(database, user=deployer) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT current_setting('cron.database_name')")
