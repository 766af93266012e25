"""Schedule the pg_cron job that runs the tick in this database.

The job is named ``session_status:<database>`` and calls the batching
procedure, schema-qualified. Scheduling an existing name replaces the job,
so upgrading again after ``alembic stamp`` leaves one job. The downgrade
removes the job if it is there and succeeds if it was removed by hand.

Revision ID: session_status_0004
Revises: session_status_0003
Create Date: 2026-12-04
"""

from session_status import migration, pgcron
from session_status.errors import ConfigurationError

revision = "session_status_0004"
down_revision = "session_status_0003"
branch_labels = None
depends_on = None

COMMAND = "CALL {schema}.advance_session_statuses_in_batches(batch_size => {batch_size})"


def upgrade() -> None:
    settings = migration.current_settings()
    checked = migration.preflight(settings)
    if checked is None:
        raise ConfigurationError(
            "offline mode (--sql) cannot schedule the pg_cron job: the job name and the database "
            "that runs it are read from the server. Run this revision online."
        )
    info, cron = checked
    pgcron.schedule_job(
        cron,
        name=pgcron.job_name(info.current_database),
        schedule=settings.schedule,
        command=COMMAND.format(schema=settings.quoted_schema(), batch_size=settings.batch_size),
        database=info.current_database,
        username=info.current_user,
        same_database=info.same_database,
    )


def downgrade() -> None:
    if migration.is_offline():
        raise ConfigurationError(
            "offline mode (--sql) cannot unschedule the pg_cron job: it is looked up on the server. "
            "Run this revision online."
        )
    settings = migration.current_settings()
    bind = migration.connection()
    info = pgcron.probe(bind, settings)
    cron = pgcron.cron_connection(bind, settings, info)
    pgcron.unschedule_job(cron, name=pgcron.job_name(info.current_database), database=info.current_database)
