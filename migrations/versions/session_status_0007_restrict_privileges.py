"""Keep the routines, TRUNCATE, TRIGGER, REFERENCES and the id sequences to the owner.

Default privileges of the schema (on Supabase: ALL for anon and
authenticated) grant these to other roles when the earlier revisions
create the objects, and row-level security does not cover them. The SQL file lists
why each one is revoked.

The downgrade changes nothing: the grants that were revoked are not
recorded, and granting them back would reopen what this revision closes.

Revision ID: session_status_0007
Revises: session_status_0006
Create Date: 2026-12-04
"""

from session_status import migration

revision = "session_status_0007"
down_revision = "session_status_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migration.execute_sql_file("0007_restrict_privileges.upgrade.sql", migration.current_settings())


def downgrade() -> None:
    pass
