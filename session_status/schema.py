"""SQLAlchemy definitions that match the DDL of the tables at the head revision.

Host apps use them to query the table, and :func:`include_object` keeps
Alembic's autogenerate from proposing changes to objects this package owns.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from session_status.config import DEFAULT_SCHEMA

STATUSES = ("scheduled", "open", "full", "completed", "cancelled")


def build_metadata(schema: str | None = DEFAULT_SCHEMA) -> sa.MetaData:
    """Return a ``MetaData`` with the ``sessions`` and ``session_status_transitions`` tables in ``schema``."""
    metadata = sa.MetaData(schema=None if schema == DEFAULT_SCHEMA else schema)
    status_list = ", ".join(f"'{status}'" for status in STATUSES)
    table = sa.Table(
        "sessions",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(always=False)),
        sa.Column("title", sa.Text),
        sa.Column("capacity", sa.Integer),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Text,
            nullable=False,
            server_default=sa.text("'scheduled'"),
            comment=(
                "scheduled, open, full, completed or cancelled; "
                "open and completed are set by the tick, full and cancelled by the app"
            ),
        ),
        sa.Column(
            "status_changed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
            comment="transaction time of the last status change, set by the sessions_guard_status trigger",
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(f"status IN ({status_list})", name="sessions_status_check"),
        sa.CheckConstraint("isfinite(starts_at) AND isfinite(ends_at)", name="sessions_starts_at_ends_at_finite_check"),
        sa.CheckConstraint("ends_at > starts_at", name="sessions_ends_at_after_starts_at_check"),
        sa.CheckConstraint("capacity > 0", name="sessions_capacity_positive_check"),
        sa.PrimaryKeyConstraint("id", name="sessions_pkey"),
        comment=(
            "session-status: sessions whose status follows the clock (scheduled -> open -> completed), "
            "advanced by advance_session_statuses()"
        ),
    )
    sa.Index(
        "sessions_due_to_complete_idx",
        table.c.ends_at,
        postgresql_where=table.c.status.in_(["scheduled", "open", "full"]),
    )
    sa.Index("sessions_due_to_open_idx", table.c.starts_at, postgresql_where=table.c.status == "scheduled")
    _add_transitions_table(metadata)
    return metadata


def _add_transitions_table(metadata: sa.MetaData) -> None:
    """Add the history table of revision session_status_0005."""
    history = sa.Table(
        "session_status_transitions",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(always=True)),
        sa.Column(
            "session_id",
            sa.BigInteger,
            nullable=False,
            comment="sessions.id; no foreign key, so the history outlives deleted sessions",
        ),
        sa.Column("from_status", sa.Text, nullable=False),
        sa.Column("to_status", sa.Text, nullable=False),
        sa.Column(
            "due_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="instant the transition became due: starts_at for scheduled -> open, ends_at for -> completed",
        ),
        sa.Column(
            "as_of",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="instant the tick judged at (its as_of argument); as_of - due_at is how late the clock was read",
        ),
        sa.Column(
            "applied_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
            comment=(
                "start time of the transaction that applied the transition (now()); "
                "the retention job deletes by this column"
            ),
        ),
        sa.CheckConstraint(
            "from_status IN ('scheduled', 'open', 'full')", name="session_status_transitions_from_status_check"
        ),
        sa.CheckConstraint("to_status IN ('open', 'completed')", name="session_status_transitions_to_status_check"),
        sa.PrimaryKeyConstraint("id", name="session_status_transitions_pkey"),
        comment=(
            "session-status: transitions applied by advance_session_statuses(), in commit order of id; "
            "read rows with id > the last id seen"
        ),
    )
    sa.Index("session_status_transitions_applied_at_idx", history.c.applied_at)
    sa.Index("session_status_transitions_session_id_idx", history.c.session_id)


metadata = build_metadata()
sessions = metadata.tables["sessions"]
session_status_transitions = metadata.tables["session_status_transitions"]

OWNED_TABLES = frozenset({"sessions", "session_status_transitions"})


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic ``include_object`` hook that skips the objects session-status owns."""
    if type_ == "table" and name in OWNED_TABLES:
        return False
    table = getattr(obj, "table", None)
    if type_ in {"index", "column", "unique_constraint", "foreign_key_constraint"} and table is not None:
        return table.name not in OWNED_TABLES
    return True
