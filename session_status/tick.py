"""``session-status tick``: run advance_session_statuses() once and report each transition."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from session_status import inspect
from session_status.listener import HISTORY_TABLE, Transition


@dataclass
class TickResult:
    opened: int
    completed: int
    # None when the database predates the history table (revision 0005).
    transitions: list[Transition] | None = field(default=None)


def run_tick(conninfo: str, *, schema: str, as_of: datetime | None = None) -> TickResult:
    """Advance the due sessions in one transaction and return what changed.

    The transitions are the history rows this transaction inserted: ids
    above the largest id before the call (for the index) and written by
    this transaction (xmin), so a concurrent tick's rows are never reported.
    """
    function = sql.Identifier(schema, "advance_session_statuses")
    history = sql.Identifier(schema, HISTORY_TABLE)
    with psycopg.connect(conninfo) as conn, conn.transaction():
        has_history = inspect.relation_exists(conn, schema, HISTORY_TABLE)
        before = 0
        if has_history:
            row = conn.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(history)).fetchone()
            before = int(row[0]) if row else 0
        if as_of is None:
            row = conn.execute(sql.SQL("SELECT opened, completed FROM {}()").format(function)).fetchone()
        else:
            row = conn.execute(sql.SQL("SELECT opened, completed FROM {}(%s)").format(function), (as_of,)).fetchone()
        assert row is not None
        result = TickResult(opened=int(row[0]), completed=int(row[1]))
        if has_history:
            with conn.cursor(row_factory=class_row(Transition)) as cursor:
                result.transitions = cursor.execute(
                    sql.SQL(
                        "SELECT id, session_id, from_status, to_status, due_at, as_of, applied_at FROM {} "
                        "WHERE id > %s AND xmin = pg_current_xact_id()::xid ORDER BY id"
                    ).format(history),
                    (before,),
                ).fetchall()
        return result
