"""Catalog details beyond helpers.catalog_snapshot: definitions, columns, comments and jobs."""

from __future__ import annotations

import psycopg

from session_status import pgcron
from tests import helpers

_DETAIL_QUERIES = {
    "column": """
        SELECT c.table_schema, c.table_name, c.column_name, c.data_type, c.is_nullable,
               coalesce(c.column_default, ''), c.is_identity
        FROM information_schema.columns c
        WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema', 'cron')
          AND c.table_name <> 'alembic_version'
    """,
    "constraint_definition": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'cron')
    """,
    "index_definition": """
        SELECT schemaname, indexname, indexdef FROM pg_indexes
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'cron')
          AND tablename <> 'alembic_version'
    """,
    "routine_definition": """
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), coalesce(obj_description(p.oid, 'pg_proc'), '')
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'cron')
    """,
    "trigger_definition": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal",
    "comment": """
        SELECT c.oid::regclass::text, coalesce(obj_description(c.oid, 'pg_class'), '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'cron')
    """,
}


def full_snapshot(conn: psycopg.Connection) -> set[tuple[str, ...]]:
    """Return helpers.catalog_snapshot plus columns, definitions and comments, without Alembic's own table."""
    objects = helpers.catalog_snapshot(conn)
    for kind, query in _DETAIL_QUERIES.items():
        for row in conn.execute(query):
            objects.add((kind, *map(str, row)))
    return {item for item in objects if not any(field.startswith("alembic_version") for field in item)}


def job_rows(cron_conn: psycopg.Connection, database: str) -> list[tuple[str, ...]]:
    """Return the pg_cron jobs that run in ``database``, without their ids; none before pg_cron exists."""
    if cron_conn.execute("SELECT to_regclass('cron.job')").fetchone() == (None,):
        return []
    rows = cron_conn.execute(
        "SELECT jobname, schedule, command, database, username, active::text FROM cron.job "
        "WHERE database = %s ORDER BY jobname",
        (database,),
    ).fetchall()
    return [tuple(map(str, row)) for row in rows]


# Suffixes of this package's job names: the tick, the history retention job
# (runs in the app database) and the run-record retention job (runs in
# pg_cron's database).
JOB_PURPOSES = ("", "retention", "cron-retention")


def package_job_rows(cron_conn: psycopg.Connection, database: str) -> list[tuple[str, ...]]:
    """Return the jobs that run in ``database`` and this package's jobs for it that run elsewhere.

    Rows are as in :func:`job_rows`, sorted by job name.
    """
    if cron_conn.execute("SELECT to_regclass('cron.job')").fetchone() == (None,):
        return []
    names = [pgcron.job_name(database, purpose) for purpose in JOB_PURPOSES]
    rows = cron_conn.execute(
        "SELECT jobname, schedule, command, database, username, active::text FROM cron.job "
        "WHERE database = %s OR jobname = ANY(%s)",
        (database, names),
    ).fetchall()
    return sorted(tuple(map(str, row)) for row in rows)
