"""``session-status status``: the jobs, their last runs, sessions per status and recent transitions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from session_status import inspect
from session_status.listener import HISTORY_TABLE


@dataclass
class Status:
    """The data that ``session-status status`` prints."""

    database: str
    cron_database: str
    schema: str
    jobs: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    sessions: dict[str, int] = field(default_factory=dict)
    effective_sessions: dict[str, int] | None = None
    overdue: int = 0
    transitions_last_hour: dict[str, int] | None = None
    last_transition_id: int | None = None
    cron_error: str | None = None


def collect_status(conninfo: str, *, schema: str, cron_conninfo: str | None = None, runs: int = 5) -> Status:
    """Read the status of the automation in the database ``conninfo``."""
    with inspect.open_databases(conninfo, cron_conninfo) as (app, server, cron, cron_error):
        status = Status(database=server.database, cron_database=server.cron_database, schema=schema)
        status.cron_error = cron_error
        if cron is not None and inspect.installed_pg_cron_version(cron) is not None:
            for purpose, (name, database) in server.job_names().items():
                job = inspect.find_job(cron, name, database)
                status.jobs.append({"purpose": purpose, "jobname": name, "database": database, **(job or {})})
            jobids = [int(job["jobid"]) for job in status.jobs if job.get("jobid") is not None]
            status.runs = inspect.recent_runs(cron, jobids, runs) if jobids else []
        _read_sessions(app, schema, status)
        return status


def _read_sessions(app: psycopg.Connection, schema: str, status: Status) -> None:
    if not inspect.relation_exists(app, schema, "sessions"):
        return
    sessions = sql.Identifier(schema, "sessions")
    rows = app.execute(sql.SQL("SELECT status, count(*) FROM {} GROUP BY status").format(sessions)).fetchall()
    status.sessions = {str(name): int(count) for name, count in rows}
    status.overdue = inspect.overdue(app, schema)[0]
    if inspect.relation_exists(app, schema, "sessions_effective_status"):
        view = sql.Identifier(schema, "sessions_effective_status")
        rows = app.execute(sql.SQL("SELECT status, count(*) FROM {} GROUP BY status").format(view)).fetchall()
        status.effective_sessions = {str(name): int(count) for name, count in rows}
    if inspect.relation_exists(app, schema, HISTORY_TABLE):
        history = sql.Identifier(schema, HISTORY_TABLE)
        rows = app.execute(
            sql.SQL(
                "SELECT from_status || ' -> ' || to_status, count(*) FROM {} "
                "WHERE applied_at > now() - interval '1 hour' GROUP BY 1 ORDER BY 1"
            ).format(history)
        ).fetchall()
        status.transitions_last_hour = {str(name): int(count) for name, count in rows}
        row = app.execute(sql.SQL("SELECT max(id) FROM {}").format(history)).fetchone()
        status.last_transition_id = row[0] if row else None
