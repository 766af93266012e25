"""Security defaults on a server set up like a Supabase project.

The module's server makes pg_cron's database the app database, as on
Supabase. A superuser pre-installs pg_cron and creates the API roles anon
and authenticated with Supabase's default privileges (ALL on new tables,
sequences and functions in public), then an ordinary owner role runs the
migrations.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from session_status import pgcron
from session_status.sandbox import Sandbox
from tests import catalog, helpers
from tests.security_lints import run_lints

APP_DATABASE = "app"
OWNER = "app_owner"
API_ROLES = ("anon", "authenticated")
ROUTINES = (
    "FUNCTION public.advance_session_statuses(timestamptz, integer)",
    "PROCEDURE public.advance_session_statuses_in_batches(timestamptz, integer)",
    "FUNCTION public.purge_session_status_transitions(interval)",
    "FUNCTION public.sessions_guard_status()",
)
RELATIONS = ("public.sessions", "public.session_status_transitions", "public.sessions_effective_status")
SEQUENCES = ("public.sessions_id_seq", "public.session_status_transitions_id_seq")
SECURITY_DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def prepare_supabase_like(server: Sandbox) -> None:
    """Create the roles, the database and the grants a Supabase project has before the app migrates."""
    with server.connect() as admin:
        admin.execute("CREATE ROLE anon NOLOGIN")
        admin.execute("CREATE ROLE authenticated NOLOGIN")
        admin.execute(f"CREATE ROLE {OWNER} LOGIN")
        # As on Supabase, the owner may switch to the API roles (the tests use SET ROLE).
        admin.execute(f"GRANT anon, authenticated TO {OWNER}")
        admin.execute(f"CREATE DATABASE {APP_DATABASE} OWNER {OWNER}")
    with server.connect(APP_DATABASE) as admin:
        admin.execute("CREATE EXTENSION pg_cron SCHEMA pg_catalog")
        admin.execute(f"GRANT USAGE ON SCHEMA cron TO {OWNER}")
        admin.execute("GRANT USAGE ON SCHEMA public TO anon, authenticated")
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            admin.execute(
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA public GRANT ALL ON {kind} TO anon, authenticated"
            )


@pytest.fixture(scope="module")
def supabase() -> Iterator[Sandbox]:
    with Sandbox(cron_database=APP_DATABASE) as server:
        prepare_supabase_like(server)
        helpers.upgrade(server.url(APP_DATABASE, user=OWNER), "head")
        yield server


@pytest.fixture
def owner_conn(supabase: Sandbox) -> Iterator[psycopg.Connection]:
    """A connection as the owner inside a transaction that is rolled back after the test."""
    with supabase.connect(APP_DATABASE, user=OWNER, autocommit=False) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn
        conn.rollback()


def insert_session(conn: psycopg.Connection, starts_at: datetime, status: str = "scheduled") -> int:
    row = conn.execute(
        "INSERT INTO sessions (starts_at, ends_at, status) VALUES (%s, %s, %s) RETURNING id",
        (starts_at, starts_at + HOUR, status),
    ).fetchone()
    assert row is not None
    return int(row[0])


def tick(conn: psycopg.Connection, as_of: datetime) -> tuple[int, int]:
    row = conn.execute("SELECT opened, completed FROM advance_session_statuses(%s)", (as_of,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def attempt(conn: psycopg.Connection, statement: str) -> type[Exception] | int:
    """Run ``statement`` in a savepoint; return the rows it affected or the class of its error."""
    conn.execute("SAVEPOINT attempt")
    try:
        cursor = conn.execute(statement)
    except psycopg.Error as error:
        conn.execute("ROLLBACK TO SAVEPOINT attempt")
        return type(error)
    conn.execute("RELEASE SAVEPOINT attempt")
    return cursor.rowcount


# -- row-level security ----------------------------------------------------------------


def test_rls_enabled_and_not_forced(owner_conn: psycopg.Connection) -> None:
    row = owner_conn.execute(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'public.sessions'::regclass"
    ).fetchone()
    assert row == (True, False)


def test_tick_works_for_owner_with_rls(owner_conn: psycopg.Connection) -> None:
    session = insert_session(owner_conn, T0)

    assert tick(owner_conn, T0) == (1, 0)
    status = owner_conn.execute("SELECT status FROM sessions WHERE id = %s", (session,)).fetchone()
    assert status == ("open",)


def test_forced_rls_needs_owner_policy(owner_conn: psycopg.Connection) -> None:
    insert_session(owner_conn, T0)
    owner_conn.execute("ALTER TABLE sessions FORCE ROW LEVEL SECURITY")

    # Without a policy for the owner the tick sees no row: it fails silently.
    assert tick(owner_conn, T0) == (0, 0)

    owner_conn.execute(f"CREATE POLICY sessions_tick ON sessions TO {OWNER} USING (true) WITH CHECK (true)")
    assert tick(owner_conn, T0) == (1, 0)


@pytest.mark.parametrize("role", API_ROLES)
def test_api_role_without_policy_gets_no_rows(owner_conn: psycopg.Connection, role: str) -> None:
    insert_session(owner_conn, T0)
    owner_conn.execute(f"SET LOCAL ROLE {role}")

    assert owner_conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)
    assert attempt(owner_conn, "UPDATE sessions SET title = 'x'") == 0
    assert attempt(owner_conn, "DELETE FROM sessions") == 0
    inserted = attempt(
        owner_conn, "INSERT INTO sessions (starts_at, ends_at) VALUES (now(), now() + interval '1 hour')"
    )
    assert inserted is psycopg.errors.InsufficientPrivilege

    owner_conn.execute("RESET ROLE")
    assert owner_conn.execute("SELECT count(*), max(title) FROM sessions").fetchone() == (1, None)


@pytest.mark.parametrize("role", API_ROLES)
def test_api_role_cannot_bypass_rls(owner_conn: psycopg.Connection, role: str) -> None:
    insert_session(owner_conn, T0)
    owner_conn.execute(f"SET LOCAL ROLE {role}")

    assert attempt(owner_conn, "TRUNCATE sessions") is psycopg.errors.InsufficientPrivilege
    assert (
        attempt(
            owner_conn,
            "CREATE TRIGGER planted BEFORE UPDATE ON sessions "
            "FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
        )
        is psycopg.errors.InsufficientPrivilege
    )
    assert (
        attempt(owner_conn, "CREATE TABLE planted (id bigint REFERENCES sessions)")
        is psycopg.errors.InsufficientPrivilege
    )
    assert attempt(owner_conn, "SELECT setval('sessions_id_seq', 1)") is psycopg.errors.InsufficientPrivilege

    owner_conn.execute("RESET ROLE")
    assert owner_conn.execute("SELECT count(*) FROM sessions").fetchone() == (1,)


@pytest.mark.parametrize("role", API_ROLES)
def test_api_role_cannot_run_tick(owner_conn: psycopg.Connection, role: str) -> None:
    for routine in ROUTINES:
        signature = routine.split(" ", 1)[1]
        allowed = owner_conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, signature))
        assert allowed.fetchone() == (False,), routine

    owner_conn.execute(f"SET LOCAL ROLE {role}")
    assert attempt(owner_conn, "SELECT advance_session_statuses()") is psycopg.errors.InsufficientPrivilege
    called = attempt(owner_conn, "CALL advance_session_statuses_in_batches()")
    assert called is psycopg.errors.InsufficientPrivilege
    purged = attempt(owner_conn, "SELECT purge_session_status_transitions(interval '1 day')")
    assert purged is psycopg.errors.InsufficientPrivilege


@pytest.mark.parametrize("role", API_ROLES)
def test_api_role_lacks_privileges_outside_rls(owner_conn: psycopg.Connection, role: str) -> None:
    # Supabase's default privileges granted ALL on these objects. The upgrade
    # revokes the privileges that row-level security does not govern.
    for relation in RELATIONS:
        for privilege in ("TRUNCATE", "TRIGGER", "REFERENCES"):
            allowed = owner_conn.execute("SELECT has_table_privilege(%s, %s, %s)", (role, relation, privilege))
            assert allowed.fetchone() == (False,), f"{privilege} on {relation}"
    for sequence in SEQUENCES:
        for privilege in ("USAGE", "SELECT", "UPDATE"):
            allowed = owner_conn.execute("SELECT has_sequence_privilege(%s, %s, %s)", (role, sequence, privilege))
            assert allowed.fetchone() == (False,), f"{privilege} on {sequence}"

    owner_conn.execute(f"SET LOCAL ROLE {role}")
    truncated = attempt(owner_conn, "TRUNCATE session_status_transitions")
    assert truncated is psycopg.errors.InsufficientPrivilege
    moved = attempt(owner_conn, "SELECT setval('session_status_transitions_id_seq', 1)")
    assert moved is psycopg.errors.InsufficientPrivilege


def test_owner_keeps_privileges(owner_conn: psycopg.Connection) -> None:
    for routine in ROUTINES:
        signature = routine.split(" ", 1)[1]
        allowed = owner_conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (OWNER, signature))
        assert allowed.fetchone() == (True,), routine
    for relation in RELATIONS:
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES"):
            allowed = owner_conn.execute("SELECT has_table_privilege(%s, %s, %s)", (OWNER, relation, privilege))
            assert allowed.fetchone() == (True,), f"{privilege} on {relation}"
    for sequence in SEQUENCES:
        allowed = owner_conn.execute("SELECT has_sequence_privilege(%s, %s, 'UPDATE')", (OWNER, sequence))
        assert allowed.fetchone() == (True,), sequence


def example_policies_sql() -> str:
    text = SECURITY_DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- example-policies:[^>]*-->\s*```sql\n(.*?)```", text, re.DOTALL)
    assert match, f"{SECURITY_DOC} has no example-policies block"
    return match.group(1)


def test_documented_policies_work(owner_conn: psycopg.Connection) -> None:
    visible = insert_session(owner_conn, T0)
    cancelled = insert_session(owner_conn, T0, "cancelled")
    owner_conn.execute(example_policies_sql())

    owner_conn.execute("SET LOCAL ROLE authenticated")
    rows = owner_conn.execute("SELECT id FROM sessions ORDER BY id").fetchall()
    assert rows == [(visible,)]
    # INSERT works through the identity column without a grant on its sequence.
    created = attempt(owner_conn, "INSERT INTO sessions (starts_at, ends_at) VALUES ('2030-01-01', '2030-01-02')")
    assert created == 1
    forged = attempt(
        owner_conn,
        "INSERT INTO sessions (starts_at, ends_at, status) VALUES ('2020-01-01', '2020-01-02', 'completed')",
    )
    assert forged is psycopg.errors.InsufficientPrivilege
    assert attempt(owner_conn, f"UPDATE sessions SET status = 'cancelled' WHERE id = {visible}") == 0

    owner_conn.execute("SET LOCAL ROLE anon")
    assert owner_conn.execute("SELECT count(*) FROM sessions").fetchone() == (0,)

    owner_conn.execute("RESET ROLE")
    assert tick(owner_conn, T0) == (1, 0)
    statuses = owner_conn.execute(
        "SELECT id, status FROM sessions WHERE id IN (%s, %s) ORDER BY id", (visible, cancelled)
    )
    assert statuses.fetchall() == [(visible, "open"), (cancelled, "cancelled")]


@pytest.mark.slow
def test_job_runs_as_owner_with_rls(supabase: Sandbox) -> None:
    with supabase.connect(APP_DATABASE, user=OWNER) as conn:
        jobs = conn.execute("SELECT jobname, username, database FROM cron.job ORDER BY jobname").fetchall()
        # pg_cron's database is the app database, so all three jobs run in it.
        assert jobs == sorted(
            (pgcron.job_name(APP_DATABASE, purpose), OWNER, APP_DATABASE) for purpose in catalog.JOB_PURPOSES
        )
        session = insert_session(conn, datetime.now(UTC) - timedelta(minutes=1))
        try:
            deadline = time.monotonic() + 130
            status = None
            while time.monotonic() < deadline:
                row = conn.execute("SELECT status FROM sessions WHERE id = %s", (session,)).fetchone()
                status = row[0] if row else None
                if status == "open":
                    break
                time.sleep(1)
            assert status == "open", "the pg_cron job did not open the due session within 130 s"
        finally:
            conn.execute("DELETE FROM sessions WHERE id = %s", (session,))


# -- functions and the extension ---------------------------------------------------------------


def test_functions_invoker_with_pinned_search_path(owner_conn: psycopg.Connection) -> None:
    rows = owner_conn.execute(
        "SELECT proname, prokind, prosecdef, proconfig FROM pg_proc "
        "WHERE pronamespace = 'public'::regnamespace ORDER BY proname"
    ).fetchall()
    assert [row[0] for row in rows] == [
        "advance_session_statuses",
        "advance_session_statuses_in_batches",
        "purge_session_status_transitions",
        "sessions_guard_status",
    ]
    for name, kind, security_definer, config in rows:
        assert security_definer is False, name
        if kind == "f":
            assert config == ["search_path=pg_catalog, pg_temp"], name
        else:
            # PostgreSQL forbids COMMIT in a procedure with a SET clause.
            assert config is None, name


def test_no_security_definer_function_for_api_roles(owner_conn: psycopg.Connection) -> None:
    rows = owner_conn.execute(
        "SELECT p.oid::regprocedure::text, r.rolname FROM pg_proc p CROSS JOIN pg_roles r "
        "WHERE p.prosecdef AND r.rolname IN ('anon', 'authenticated') "
        "AND has_function_privilege(r.oid, p.oid, 'EXECUTE')"
    ).fetchall()
    assert rows == []


def test_pg_cron_objects_outside_public(owner_conn: psycopg.Connection) -> None:
    extension = owner_conn.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_cron'"
    ).fetchone()
    assert extension == ("pg_catalog",)
    schemas = owner_conn.execute(
        "SELECT DISTINCT coalesce(c.relnamespace, p.pronamespace)::regnamespace::text "
        "FROM pg_depend d "
        "LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid "
        "LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid "
        "WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' "
        "AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_cron') "
        "AND coalesce(c.relnamespace, p.pronamespace) IS NOT NULL"
    ).fetchall()
    assert schemas == [("cron",)]


def test_revision_creates_pg_cron_outside_public() -> None:
    # Here the migrations create the extension themselves, as a superuser.
    with Sandbox(cron_database=APP_DATABASE) as server:
        server.create_database(APP_DATABASE)
        helpers.upgrade(server.url(APP_DATABASE), "session_status_0002")
        with server.connect(APP_DATABASE) as conn:
            extension = conn.execute(
                "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_cron'"
            ).fetchone()
    assert extension == ("pg_catalog",)


def test_cross_database_pg_cron_outside_public(cron_conn: psycopg.Connection, migrated_database: str) -> None:
    # The shared server's template migration created pg_cron through the cron connection.
    extension = cron_conn.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_cron'"
    ).fetchone()
    assert extension == ("pg_catalog",)


# -- Supabase's linter rules ----------------------------------------------------------------------


def test_lints_find_only_alembic_version(owner_conn: psycopg.Connection) -> None:
    findings = run_lints(owner_conn)

    assert findings["function_search_path_mutable"] == []
    assert findings["extension_in_public"] == []
    assert findings["security_definer_function_executable"] == []
    # The host app's version table; docs/security.md says how to lock it down.
    assert findings["rls_disabled_in_public"] == ["public.alembic_version"]


def test_lints_clean_after_documented_fix(owner_conn: psycopg.Connection) -> None:
    owner_conn.execute("ALTER TABLE public.alembic_version ENABLE ROW LEVEL SECURITY")
    owner_conn.execute("REVOKE ALL ON public.alembic_version FROM anon, authenticated")

    findings = run_lints(owner_conn)

    assert findings == {name: [] for name in findings}


def test_lints_find_planted_violations(supabase: Sandbox) -> None:
    # Planted by a superuser, who may create extensions, in a transaction rolled back afterwards.
    with supabase.connect(APP_DATABASE, autocommit=False) as conn:
        conn.execute(f"SET ROLE {OWNER}")
        conn.execute("CREATE FUNCTION public.planted_mutable() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        conn.execute("CREATE TABLE public.planted_without_rls (id int)")
        conn.execute(
            "CREATE FUNCTION public.planted_definer() RETURNS int LANGUAGE sql SECURITY DEFINER "
            "SET search_path = pg_catalog AS 'SELECT 1'"
        )
        conn.execute("RESET ROLE")
        conn.execute("CREATE EXTENSION citext SCHEMA public")

        findings = run_lints(conn)
        conn.rollback()

    assert "public.planted_mutable()" in findings["function_search_path_mutable"]
    assert "public.planted_without_rls" in findings["rls_disabled_in_public"]
    assert findings["extension_in_public"] == ["citext"]
    assert findings["security_definer_function_executable"] == [
        "public.planted_definer() by anon",
        "public.planted_definer() by authenticated",
    ]
