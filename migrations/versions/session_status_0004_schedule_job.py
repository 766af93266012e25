"""Schedule the pg_cron job that runs the tick in this database.

The job is named ``session_status:<database>`` and calls the batching
procedure, schema-qualified. Scheduling an existing name replaces the job,
so upgrading again after ``alembic stamp`` leaves one job. The downgrade
removes the job if it is there and succeeds if it was removed by hand.

Offline (``--sql``) the revision writes SQL that computes the job name from
current_database() when it runs; that script works only in pg_cron's own
database and raises an error in any other.

Revision ID: session_status_0004
Revises: session_status_0003
Create Date: 2026-12-04
"""

from session_status import migration

revision = "session_status_0004"
down_revision = "session_status_0003"
branch_labels = None
depends_on = None

COMMAND = "CALL {schema}.advance_session_statuses_in_batches(batch_size => {batch_size})"


def upgrade() -> None:
    settings = migration.current_settings()
    migration.schedule_job(
        settings,
        schedule=settings.schedule,
        command=COMMAND.format(schema=settings.quoted_schema(), batch_size=settings.batch_size),
    )


def downgrade() -> None:
    migration.unschedule_job(migration.current_settings())
