"""Record every transition in a history table, notify listeners, add the effective-status view.

Replaces advance_session_statuses() with a version of the same signature
that inserts each transition it applies into session_status_transitions
and sends one pg_notify on channel ``session_status`` per call. The
downgrade restores the 0003 function and drops the table and the view.

Revision ID: session_status_0005
Revises: session_status_0004
Create Date: 2026-12-04
"""

from session_status import migration

revision = "session_status_0005"
down_revision = "session_status_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migration.execute_sql_file("0005_transition_history.upgrade.sql", migration.current_settings())


def downgrade() -> None:
    migration.execute_sql_file("0005_transition_history.downgrade.sql")
