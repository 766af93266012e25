"""Create the sessions table, its constraints, status guard and due indexes.

Revision ID: session_status_0001
Revises:
Create Date: 2026-12-04
"""

from session_status import migration

revision = "session_status_0001"
down_revision = None
branch_labels = ("session_status",)
depends_on = None


def upgrade() -> None:
    settings = migration.current_settings()
    # pg_cron is checked here too, so that an unusable server fails the
    # upgrade before its first change even when each revision commits alone.
    migration.preflight(settings)
    migration.execute_sql_file("0001_sessions_schema.upgrade.sql", settings)


def downgrade() -> None:
    migration.execute_sql_file("0001_sessions_schema.downgrade.sql")
