"""Tables of the example host app: rooms, and bookings of session-status sessions.

The foreign key to sessions names the Column object of session-status's
metadata, which SQLAlchemy resolves across MetaData collections, so the
host metadata needs no copy of the sessions table.
"""

import sqlalchemy as sa

from session_status import schema

metadata = sa.MetaData()

rooms = sa.Table(
    "rooms",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
)

bookings = sa.Table(
    "bookings",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("session_id", sa.BigInteger, nullable=False),
    sa.Column("room_id", sa.BigInteger, sa.ForeignKey("rooms.id"), nullable=False),
    sa.Column("booked_by", sa.Text, nullable=False),
    sa.ForeignKeyConstraint(
        ["session_id"], [schema.sessions.c.id], name="bookings_session_id_fkey", ondelete="CASCADE"
    ),
)
