"""Define advance_session_statuses() and the batching procedure the job calls.

Revision ID: session_status_0003
Revises: session_status_0002
Create Date: 2026-12-04
"""

from session_status import migration

revision = "session_status_0003"
down_revision = "session_status_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migration.execute_sql_file("0003_advance_function.upgrade.sql", migration.current_settings())


def downgrade() -> None:
    migration.execute_sql_file("0003_advance_function.downgrade.sql")
