"""A session that the app is booking (a foreign key check holds FOR KEY SHARE) is not skipped."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from session_status.sandbox import Sandbox


def _book_in_open_transaction(booking: psycopg.Connection, session_id: int) -> None:
    # Inserting a row that references sessions makes PostgreSQL lock the
    # session row FOR KEY SHARE until this transaction ends.
    booking.execute("INSERT INTO bookings (session_id) VALUES (%s)", (session_id,))


def _prepare(conn: psycopg.Connection) -> tuple[int, int]:
    conn.execute("CREATE TABLE bookings (id serial PRIMARY KEY, session_id bigint NOT NULL REFERENCES sessions (id))")
    due_to_open = conn.execute(
        "INSERT INTO sessions (starts_at, ends_at) VALUES (now() - interval '1 minute', now() + interval '1 hour') "
        "RETURNING id"
    ).fetchone()[0]
    due_to_complete = conn.execute(
        "INSERT INTO sessions (starts_at, ends_at, status) "
        "VALUES (now() - interval '2 hours', now() - interval '1 minute', 'full') RETURNING id"
    ).fetchone()[0]
    return int(due_to_open), int(due_to_complete)


def test_tick_advances_sessions_being_booked(connect: Callable[..., psycopg.Connection]) -> None:
    setup = connect()
    due_to_open, due_to_complete = _prepare(setup)
    booking = connect(autocommit=False)
    _book_in_open_transaction(booking, due_to_open)
    _book_in_open_transaction(booking, due_to_complete)
    ticker = connect()

    result = ticker.execute("SELECT opened, completed FROM advance_session_statuses()").fetchone()

    assert result == (1, 1)
    booking.commit()
    statuses = dict(setup.execute("SELECT id, status FROM sessions").fetchall())
    assert statuses[due_to_open] == "open"
    assert statuses[due_to_complete] == "completed"
    assert setup.execute("SELECT count(*) FROM bookings").fetchone() == (2,)


def test_head_tick_advances_sessions_being_booked(sandbox: Sandbox, head_database: str) -> None:
    with (
        sandbox.connect(head_database) as setup,
        sandbox.connect(head_database, autocommit=False) as booking,
        sandbox.connect(head_database) as ticker,
    ):
        due_to_open, due_to_complete = _prepare(setup)
        _book_in_open_transaction(booking, due_to_open)
        _book_in_open_transaction(booking, due_to_complete)
        ticker.execute("SET lock_timeout = '2s'")

        result = ticker.execute("SELECT opened, completed FROM advance_session_statuses()").fetchone()
        booking.commit()

        assert result == (1, 1)
        history = setup.execute(
            "SELECT session_id, from_status, to_status FROM session_status_transitions ORDER BY id"
        ).fetchall()
        assert history == [(due_to_complete, "full", "completed"), (due_to_open, "scheduled", "open")]


@pytest.mark.parametrize("lock", ["FOR UPDATE", "FOR NO KEY UPDATE"])
def test_tick_skips_rows_locked_for_update(connect: Callable[..., psycopg.Connection], lock: str) -> None:
    setup = connect()
    due_to_open, _ = _prepare(setup)
    holder = connect(autocommit=False)
    holder.execute(f"SELECT id FROM sessions WHERE id = %s {lock}", (due_to_open,))
    ticker = connect()

    result = ticker.execute("SELECT opened, completed FROM advance_session_statuses()").fetchone()

    assert result == (0, 1)
    holder.rollback()
    assert ticker.execute("SELECT opened, completed FROM advance_session_statuses()").fetchone() == (1, 0)
