"""``session-status doctor``: check every part the automation depends on.

Each check yields one :class:`Check` with a level (OK, WARN or FAIL), what
was found and, unless OK, how to fix it. The checks only read: they never
change the database or the jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from enum import StrEnum

import psycopg
from alembic.script import ScriptDirectory
from psycopg import sql

from session_status import inspect, script_location
from session_status.config import quote_identifier
from session_status.inspect import Server
from session_status.pgcron import MIN_VERSION, parse_version

logger = logging.getLogger(__name__)

DEFAULT_MAX_LAG = timedelta(minutes=2)
UPGRADE_FIX = "run `alembic upgrade heads` with this package's revisions (see docs/observability.md)"


class Level(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """The result of one check."""

    name: str
    level: Level
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        result = asdict(self)
        result["level"] = self.level.value
        return result


def run_checks(
    conninfo: str,
    *,
    schema: str = "public",
    cron_conninfo: str | None = None,
    expected_schedule: str | None = None,
    max_lag: timedelta = DEFAULT_MAX_LAG,
    version_table: str = "alembic_version",
) -> list[Check]:
    """Run every check against the database ``conninfo`` and return the results in a fixed order."""
    try:
        with inspect.open_databases(conninfo, cron_conninfo) as (app, server, cron, cron_error):
            checks = [_check_preload(server, cron), _check_cron_database(server, cron, cron_error)]
            if cron is not None and inspect.installed_pg_cron_version(cron) is not None:
                checks += _guarded("job", lambda: _check_jobs(server, cron, schema, expected_schedule), server)
            elif server.pg_cron_preloaded and cron is not None:
                checks.append(
                    Check(
                        "extension",
                        Level.FAIL,
                        f"the pg_cron extension is not created in {server.cron_database!r}",
                        UPGRADE_FIX + f"; it creates the extension in {server.cron_database!r}",
                    )
                )
            if server.pg_cron_preloaded:
                checks.append(_check_launcher(app, server))
            checks += _guarded("lag", lambda: [_check_lag(app, schema, max_lag)], server)
            checks += _guarded("revisions", lambda: [_check_revisions(app, version_table)], server)
            return checks
    except psycopg.OperationalError as error:
        message = " ".join(str(error).split())
        return [
            Check("connection", Level.FAIL, f"cannot connect or lost the connection: {message}", "check --database-url")
        ]


def _guarded(name: str, run: Callable[[], list[Check]], server: Server) -> list[Check]:
    """Run ``run``, turning a missing privilege into a FAIL of check ``name``."""
    try:
        return run()
    except psycopg.errors.InsufficientPrivilege as error:
        message = " ".join(str(error).split())
        return [
            Check(
                name,
                Level.FAIL,
                f"role {server.user!r} may not read what this check needs: {message}",
                "run doctor as the role that ran the migrations, or grant that role's read access "
                "(USAGE on schema cron in pg_cron's database, SELECT on the sessions table)",
            )
        ]


def exit_code(checks: list[Check]) -> int:
    """Return 1 when any check failed, else 0: warnings do not fail the command."""
    return 1 if any(check.level is Level.FAIL for check in checks) else 0


def _check_preload(server: Server, cron: psycopg.Connection | None) -> Check:
    if server.preload_libraries is None:
        return Check(
            "pg_cron",
            Level.WARN,
            f"cannot tell: role {server.user!r} may not read shared_preload_libraries",
            f"GRANT pg_read_all_settings TO {server.user}; or run doctor as a superuser",
        )
    if not server.pg_cron_preloaded:
        return Check(
            "pg_cron",
            Level.FAIL,
            f"pg_cron is not in shared_preload_libraries ({', '.join(server.preload_libraries or []) or 'empty'})",
            "add pg_cron to shared_preload_libraries (postgresql.conf or the managed server's parameter group), "
            "set cron.database_name, and restart PostgreSQL",
        )
    installed = inspect.installed_pg_cron_version(cron) if cron is not None else None
    version = installed or server.available_version
    if version is None:
        return Check(
            "pg_cron",
            Level.FAIL,
            "pg_cron is preloaded but its extension files are not installed",
            "install the pg_cron package for this PostgreSQL version (e.g. postgresql-15-cron)",
        )
    if parse_version(version) < MIN_VERSION:
        return Check(
            "pg_cron", Level.FAIL, f"pg_cron {version} is older than 1.4", "upgrade the pg_cron package to 1.4 or later"
        )
    where = "installed" if installed else "available, not created"
    return Check("pg_cron", Level.OK, f"preloaded, version {version} ({where}), PostgreSQL {server.server_version}")


def _check_cron_database(server: Server, cron: psycopg.Connection | None, cron_error: str | None) -> Check:
    if not server.pg_cron_preloaded:
        return Check("cron.database_name", Level.FAIL, "not applicable: pg_cron is not loaded", "see the pg_cron check")
    if cron_error is not None:
        return Check(
            "cron.database_name",
            Level.FAIL,
            f"{server.cron_database!r}, but connecting to it failed: {cron_error}",
            "pass --cron-database-url URL that reaches pg_cron's database",
        )
    if not server.cron_database_known:
        return Check(
            "cron.database_name",
            Level.WARN,
            f"cannot read it as role {server.user!r}; assuming pg_cron's default {server.cron_database!r}",
            f"GRANT pg_read_all_settings TO {server.user}; or pass --cron-database-url",
        )
    mode = (
        "the app database itself (same-database mode)"
        if server.same_database
        else f"jobs run in {server.database!r} through cron.schedule_in_database (cross-database mode)"
    )
    return Check("cron.database_name", Level.OK, f"{server.cron_database!r}: {mode}")


def _check_jobs(server: Server, cron: psycopg.Connection, schema: str, expected_schedule: str | None) -> list[Check]:
    names = server.job_names()
    tick_name, tick_database = names["tick"]
    job = inspect.find_job(cron, tick_name, tick_database)
    checks: list[Check] = []
    if job is None:
        checks.append(Check("job", Level.FAIL, f"no pg_cron job {tick_name!r} runs in {tick_database!r}", UPGRADE_FIX))
    else:
        checks.append(_judge_job(job, schema, expected_schedule))
    missing = [
        name
        for key, (name, database) in names.items()
        if key != "tick" and inspect.find_job(cron, name, database) is None
    ]
    if missing:
        checks.append(
            Check("retention jobs", Level.WARN, f"missing: {', '.join(missing)}", UPGRADE_FIX + " (revision 0006)")
        )
    else:
        checks.append(Check("retention jobs", Level.OK, "history and run-details retention jobs scheduled"))
    if job is not None:
        checks.append(_check_last_run(cron, job))
    return checks


def _judge_job(job: dict[str, object], schema: str, expected_schedule: str | None) -> Check:
    summary = f"{job['jobname']!r} (id {job['jobid']}) runs {job['schedule']!r} in {job['database']!r}"
    if not job["active"]:
        return Check(
            "job",
            Level.FAIL,
            summary + ", but it is inactive",
            f"SELECT cron.alter_job({job['jobid']}, active => true); in pg_cron's database",
        )
    target = f"{quote_identifier(schema)}.advance_session_statuses_in_batches"
    if target not in str(job["command"]):
        return Check(
            "job",
            Level.WARN,
            summary + f", but its command {job['command']!r} does not call {target}",
            "pass the schema the revisions were run with (--schema), or upgrade again to reschedule",
        )
    if expected_schedule is not None and job["schedule"] != expected_schedule:
        return Check(
            "job",
            Level.WARN,
            summary + f", expected {expected_schedule!r}",
            "run `alembic upgrade` again with -x schedule=... to reschedule, or fix --expected-schedule",
        )
    return Check("job", Level.OK, summary + ", active")


def _check_last_run(cron: psycopg.Connection, job: dict[str, object]) -> Check:
    runs = inspect.recent_runs(cron, [int(str(job["jobid"]))], 1)
    if not runs:
        return Check(
            "last run",
            Level.WARN,
            "no run recorded yet",
            "wait for the schedule; if it stays empty, check the launcher and cron.log_run",
        )
    run = runs[0]
    when = run["end_time"] or run["start_time"]
    detail = f"run {run['runid']} {run['status']} at {when:%Y-%m-%d %H:%M:%S %Z}" if when else f"run {run['runid']}"
    if run["status"] == "failed":
        message = (run["return_message"] or "").strip()
        return Check(
            "last run", Level.FAIL, f"{detail}: {message}", "fix the error above; the server log has the details"
        )
    return Check("last run", Level.OK, detail)


def _check_launcher(app: psycopg.Connection, server: Server) -> Check:
    rows = app.execute(
        "SELECT pid, datname, backend_start FROM pg_stat_activity WHERE backend_type = 'pg_cron launcher'"
    ).fetchall()
    if rows:
        pid, datname, started = rows[0]
        return Check(
            "launcher",
            Level.OK,
            f"pg_cron launcher running (pid {pid}, database {datname}, since {started:%Y-%m-%d %H:%M:%S})",
        )
    if not server.reads_all_stats:
        return Check(
            "launcher",
            Level.WARN,
            f"cannot tell: role {server.user!r} cannot see other roles' processes in pg_stat_activity",
            f"GRANT pg_read_all_stats TO {server.user}; or run doctor as a superuser",
        )
    return Check(
        "launcher",
        Level.FAIL,
        "no 'pg_cron launcher' process: no job runs",
        "restart PostgreSQL; pg_cron 1.4 starts the launcher only at server start "
        f"and it needs database {server.cron_database!r} to exist",
    )


def _check_lag(app: psycopg.Connection, schema: str, max_lag: timedelta) -> Check:
    if not inspect.relation_exists(app, schema, "sessions"):
        return Check("lag", Level.FAIL, f"table {schema}.sessions not found", UPGRADE_FIX + " or pass --schema")
    count, oldest, now = inspect.overdue(app, schema)
    if count == 0:
        return Check("lag", Level.OK, "no transition is overdue")
    lag = now - oldest
    detail = f"{count} transition(s) overdue, the oldest due {_seconds(lag)} ago at {oldest:%Y-%m-%d %H:%M:%S %Z}"
    if lag <= max_lag:
        return Check("lag", Level.OK, detail)
    fix = (
        "check the job, its last run and the launcher above; `session-status tick` applies them now. "
        "For a job that runs less often than every minute, raise the limit with --max-lag SECONDS"
    )
    level = Level.WARN if lag <= 10 * max_lag else Level.FAIL
    return Check("lag", level, detail + f" (limit {_seconds(max_lag)})", fix)


def _check_revisions(app: psycopg.Connection, version_table: str) -> Check:
    script = ScriptDirectory(script_location())
    heads = set(script.get_heads())
    ours = {revision.revision for revision in script.walk_revisions()}
    table = sql.Identifier(version_table)
    try:
        rows = app.execute(sql.SQL("SELECT version_num FROM {}").format(table)).fetchall()
    except psycopg.errors.UndefinedTable:
        return Check("revisions", Level.FAIL, f"no {version_table} table: never migrated", UPGRADE_FIX)
    current = sorted({row[0] for row in rows} & ours)
    if not current:
        return Check("revisions", Level.FAIL, "none of this package's revisions is applied", UPGRADE_FIX)
    detail = f"current {', '.join(current)}, head {', '.join(sorted(heads))}"
    if set(current) != heads:
        return Check("revisions", Level.WARN, detail, UPGRADE_FIX)
    return Check("revisions", Level.OK, detail)


def _seconds(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    if total < 120:
        return f"{total} s"
    if total < 7200:
        return f"{total // 60} min"
    return f"{total // 3600} h {total % 3600 // 60} min"
