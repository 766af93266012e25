"""Read-only queries shared by ``session-status doctor``, ``status`` and ``tick``.

The command line talks to PostgreSQL through psycopg directly. pg_cron's
tables live in its own database (``cron.database_name``), which is often
not the app database, so :func:`open_databases` returns a connection to
each, or the same connection twice when they are one database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from session_status.database import with_database
from session_status.pgcron import DEFAULT_CRON_DATABASE, job_name

logger = logging.getLogger(__name__)

# Suffixes of the job names that revision 0006 schedules.
HISTORY_RETENTION_PURPOSE = "retention"
RUN_DETAILS_RETENTION_PURPOSE = "cron-retention"


@dataclass(frozen=True)
class Server:
    """Facts about the server and the connected role, read through the app connection."""

    database: str
    user: str
    server_version: str
    superuser: bool
    reads_all_stats: bool
    # None when the role may not read shared_preload_libraries (it needs
    # pg_read_all_settings); pg_cron is then assumed to be loaded.
    preload_libraries: list[str] | None
    cron_database: str
    # False when cron.database_name was hidden and cron_database is pg_cron's default.
    cron_database_known: bool
    available_version: str | None

    @property
    def pg_cron_preloaded(self) -> bool:
        return self.preload_libraries is None or "pg_cron" in self.preload_libraries

    @property
    def same_database(self) -> bool:
        return self.database == self.cron_database

    def job_names(self) -> dict[str, tuple[str, str]]:
        """Return this package's job names for the app database, each with the database it runs in."""
        return {
            "tick": (job_name(self.database), self.database),
            "history retention": (job_name(self.database, HISTORY_RETENTION_PURPOSE), self.database),
            "run-details retention": (job_name(self.database, RUN_DETAILS_RETENTION_PURPOSE), self.cron_database),
        }


def read_server(conn: psycopg.Connection) -> Server:
    # pg_settings leaves out the settings a role may not read instead of
    # raising, as current_setting() does.
    row = conn.execute(
        "SELECT current_database(), current_user, current_setting('server_version'), "
        "       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
        "       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), "
        "       (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'), "
        "       (SELECT setting FROM pg_settings WHERE name = 'cron.database_name'), "
        "       (SELECT default_version FROM pg_available_extensions WHERE name = 'pg_cron')"
    ).fetchone()
    assert row is not None
    libraries = None
    if row[5] is not None:
        libraries = [name.strip().strip('"') for name in row[5].split(",") if name.strip()]
    return Server(
        database=row[0],
        user=row[1],
        server_version=row[2],
        superuser=bool(row[3]),
        reads_all_stats=bool(row[3]) or bool(row[4]),
        preload_libraries=libraries,
        cron_database=row[6] or DEFAULT_CRON_DATABASE,
        cron_database_known=row[6] is not None,
        available_version=row[7],
    )


@contextmanager
def open_databases(
    conninfo: str, cron_conninfo: str | None = None
) -> Iterator[tuple[psycopg.Connection, Server, psycopg.Connection | None, str | None]]:
    """Connect to the app database and to pg_cron's database.

    Yields ``(app, server, cron, cron_error)``. ``cron`` is ``app`` itself in
    same-database mode, and None with ``cron_error`` set when pg_cron's
    database cannot be reached; the app connection's errors are raised.
    Both connections are in autocommit mode and read-only by convention.
    """
    app = psycopg.connect(conninfo, autocommit=True)
    cron: psycopg.Connection | None = None
    try:
        server = read_server(app)
        cron_error = None
        if server.same_database and cron_conninfo is None:
            cron = app
        elif server.pg_cron_preloaded or cron_conninfo is not None:
            target = cron_conninfo or with_database(conninfo, server.cron_database)
            try:
                cron = psycopg.connect(target, autocommit=True)
            except psycopg.OperationalError as error:
                cron_error = " ".join(str(error).split())
                logger.warning("cannot connect to pg_cron's database %r: %s", server.cron_database, cron_error)
        yield app, server, cron, cron_error
    finally:
        if cron is not None and cron is not app:
            cron.close()
        app.close()


def installed_pg_cron_version(cron: psycopg.Connection) -> str | None:
    row = cron.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").fetchone()
    return str(row[0]) if row else None


def find_job(cron: psycopg.Connection, name: str, database: str) -> dict[str, Any] | None:
    """Return the cron.job row of job ``name`` running in ``database``, or None."""
    with cron.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "SELECT jobid, jobname, schedule, command, database, username, active FROM cron.job "
            "WHERE jobname = %s AND database = %s ORDER BY jobid LIMIT 1",
            (name, database),
        ).fetchone()


def recent_runs(cron: psycopg.Connection, jobids: list[int], limit: int) -> list[dict[str, Any]]:
    """Return the newest ``limit`` rows of cron.job_run_details for ``jobids``, newest first."""
    with cron.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "SELECT d.runid, d.jobid, j.jobname, d.status, d.return_message, d.start_time, d.end_time "
            "FROM cron.job_run_details AS d LEFT JOIN cron.job AS j USING (jobid) "
            "WHERE d.jobid = ANY(%s) ORDER BY d.runid DESC LIMIT %s",
            (jobids, limit),
        ).fetchall()


def relation_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (sql.Identifier(schema, name).as_string(conn),)).fetchone()
    return row is not None and row[0] is not None


def overdue(conn: psycopg.Connection, schema: str) -> tuple[int, Any, Any]:
    """Return (count, oldest due instant, now()) of the transitions due at now() but not applied yet."""
    query = sql.SQL(
        "SELECT count(*), min(due_at), now() FROM ("
        "  SELECT ends_at AS due_at FROM {sessions} "
        "  WHERE status IN ('scheduled', 'open', 'full') AND ends_at <= now() "
        "  UNION ALL "
        "  SELECT starts_at FROM {sessions} "
        "  WHERE status = 'scheduled' AND starts_at <= now() AND ends_at > now()"
        ") AS due"
    ).format(sessions=sql.Identifier(schema, "sessions"))
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0]), row[1], row[2]
