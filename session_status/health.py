"""Checks of the running automation that need no migration context."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

logger = logging.getLogger(__name__)

LAUNCHER_BACKEND_TYPE = "pg_cron launcher"


def launcher_running(conn: Any) -> bool | None:
    """Return whether pg_cron's launcher process is running on the server of ``conn``.

    ``conn`` is a psycopg connection or an SQLAlchemy ``Connection``. The
    launcher starts the jobs; pg_cron 1.4 does not start it again after it
    is terminated, until PostgreSQL restarts. Returns None when the role
    cannot see other roles' backends in pg_stat_activity (it needs
    superuser or pg_read_all_stats), because then an absent launcher and
    a hidden one look the same.
    """
    can_see_all = _scalar(
        conn,
        "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') "
        "FROM pg_roles WHERE rolname = current_user",
    )
    if not can_see_all:
        return None
    # pg_stat_activity is a snapshot kept until the transaction ends.
    _scalar(conn, "SELECT pg_stat_clear_snapshot()")
    running = _scalar(
        conn,
        f"SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = '{LAUNCHER_BACKEND_TYPE}')",
    )
    return bool(running)


def _scalar(conn: Any, query: str) -> Any:
    if isinstance(conn, sa.engine.Connection):
        return conn.execute(sa.text(query)).scalar()
    row = conn.execute(query).fetchone()
    return row[0] if row else None
