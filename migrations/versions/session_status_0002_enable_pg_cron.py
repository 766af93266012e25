"""Create the pg_cron extension in pg_cron's database when it is missing.

The downgrade keeps the extension: dropping it would delete every pg_cron
job on the server, including jobs that belong to others.

Revision ID: session_status_0002
Revises: session_status_0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa

from session_status import migration, pgcron

revision = "session_status_0002"
down_revision = "session_status_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    settings = migration.current_settings()
    checked = migration.preflight(settings)
    if checked is None:
        migration.execute_sql_file("0002_enable_pg_cron.upgrade.sql", settings)
        return
    info, cron = checked
    if pgcron.installed_version(cron) is not None:
        return
    if info.same_database:
        migration.execute_sql_file("0002_enable_pg_cron.upgrade.sql", settings)
    else:
        # The same statement as 0002_enable_pg_cron.upgrade.sql, whose comment
        # says why the extension is registered in pg_catalog.
        cron.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_cron SCHEMA pg_catalog"))


def downgrade() -> None:
    pass
