"""Schedule the retention jobs for the transition history and pg_cron's run records.

Two jobs, because pg_cron runs a job in one database only and the two
tables live in different databases when pg_cron's database is not the app
database:

* ``session_status:<database>:retention`` runs in the app database and
  calls ``purge_session_status_transitions(<retention>)``;
* ``session_status:<database>:cron-retention`` runs in pg_cron's database
  and deletes the old rows of ``cron.job_run_details`` that belong to this
  package's three jobs for ``<database>``, and no other job's rows.

Both run daily at 03:17 GMT and keep ``retention`` (default '14 days').
The downgrade removes the jobs if they are there and drops the function.

Revision ID: session_status_0006
Revises: session_status_0005
Create Date: 2026-12-04
"""

from session_status import migration, pgcron
from session_status.config import quote_literal

revision = "session_status_0006"
down_revision = "session_status_0005"
branch_labels = None
depends_on = None

SCHEDULE = "17 3 * * *"
HISTORY_PURPOSE = "retention"
RUN_DETAILS_PURPOSE = "cron-retention"

HISTORY_COMMAND = "SELECT {schema}.purge_session_status_transitions(CAST({retention} AS interval))"
# Run records are matched by job name and database, so the rows of every
# other job, including same-named jobs of other databases, are kept. A run
# still in progress (no end_time) is judged by its start_time.
RUN_DETAILS_COMMAND = (
    "DELETE FROM cron.job_run_details WHERE jobid IN ("
    "SELECT jobid FROM cron.job WHERE (jobname, database) IN ({jobs})"
    ") AND coalesce(end_time, start_time) < now() - CAST({retention} AS interval)"
)


def _job_names(database: str, cron_database: str) -> list[tuple[str, str]]:
    return [
        (pgcron.job_name(database), database),
        (pgcron.job_name(database, HISTORY_PURPOSE), database),
        (pgcron.job_name(database, RUN_DETAILS_PURPOSE), cron_database),
    ]


def upgrade() -> None:
    settings = migration.current_settings()
    migration.execute_sql_file("0006_retention.upgrade.sql", settings)
    retention = quote_literal(settings.retention)
    history_command = HISTORY_COMMAND.format(schema=settings.quoted_schema(), retention=retention)
    checked = migration.preflight(settings)
    if checked is None:
        _schedule_offline(history_command, retention)
        return
    info, cron = checked
    pgcron.schedule_job(
        cron,
        name=pgcron.job_name(info.current_database, HISTORY_PURPOSE),
        schedule=SCHEDULE,
        command=history_command,
        database=info.current_database,
        username=info.current_user,
        same_database=info.same_database,
    )
    jobs = ", ".join(
        f"({quote_literal(name)}, {quote_literal(database)})"
        for name, database in _job_names(info.current_database, info.cron_database)
    )
    pgcron.schedule_job(
        cron,
        name=pgcron.job_name(info.current_database, RUN_DETAILS_PURPOSE),
        schedule=SCHEDULE,
        command=RUN_DETAILS_COMMAND.format(jobs=jobs, retention=retention),
        database=info.cron_database,
        username=info.current_user,
        same_database=info.same_database,
    )


def _schedule_offline(history_command: str, retention: str) -> None:
    # Offline scripts run in pg_cron's own database only, so both jobs run in
    # the current database, and the script computes the job names there.
    migration.execute_sql(
        pgcron.schedule_job_script(schedule=SCHEDULE, command=history_command, purpose=HISTORY_PURPOSE)
    )
    job_list = ", ".join(
        f"pg_catalog.format('(%L, %L)', {pgcron.job_name_sql('v_database', purpose)}, v_database)"
        for purpose in ("", HISTORY_PURPOSE, RUN_DETAILS_PURPOSE)
    )
    template = RUN_DETAILS_COMMAND.format(jobs="%s", retention=retention)
    command_sql = f"pg_catalog.format({quote_literal(template)}, pg_catalog.concat_ws(', ', {job_list}))"
    migration.execute_sql(
        pgcron.schedule_job_script(
            schedule=SCHEDULE, command=command_sql, purpose=RUN_DETAILS_PURPOSE, command_is_sql=True
        )
    )


def downgrade() -> None:
    settings = migration.current_settings()
    if migration.is_offline():
        # Offline, both jobs run in the current database (pg_cron's own).
        migration.unschedule_job(settings, purpose=HISTORY_PURPOSE)
        migration.unschedule_job(settings, purpose=RUN_DETAILS_PURPOSE)
        migration.execute_sql_file("0006_retention.downgrade.sql")
        return
    bind = migration.connection()
    info = pgcron.probe(bind, settings)
    cron = pgcron.cron_connection(bind, settings, info)
    pgcron.unschedule_job(
        cron, name=pgcron.job_name(info.current_database, HISTORY_PURPOSE), database=info.current_database
    )
    pgcron.unschedule_job(
        cron, name=pgcron.job_name(info.current_database, RUN_DETAILS_PURPOSE), database=info.cron_database
    )
    migration.execute_sql_file("0006_retention.downgrade.sql")
