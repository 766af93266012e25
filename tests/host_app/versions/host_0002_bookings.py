"""Create bookings of sessions: needs session-status's sessions table.

depends_on makes Alembic apply session_status_0001 before this revision,
although the two lineages have separate histories.

Revision ID: host_0002
Revises: host_0001
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "host_0002"
down_revision = "host_0001"
branch_labels = None
depends_on = "session_status_0001"


def upgrade() -> None:
    op.create_table(
        "bookings",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("session_id", sa.BigInteger, nullable=False),
        sa.Column("room_id", sa.BigInteger, sa.ForeignKey("rooms.id"), nullable=False),
        sa.Column("booked_by", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name="bookings_session_id_fkey", ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("bookings")
