"""Rescheduling: the tick only moves forward; the app moves a session back by setting it scheduled."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from tests.tick_helpers import insert_session, status_of, tick

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.mark.parametrize("old", ["open", "full", "completed", "cancelled"])
def test_postponed_session_runs_again(app_conn: psycopg.Connection, old: str) -> None:
    now = app_conn.execute("SELECT now()").fetchone()[0]
    session = insert_session(app_conn, now - 2 * HOUR, now - HOUR, old)
    new_start = now + DAY

    app_conn.execute(
        "UPDATE sessions SET status = 'scheduled', starts_at = %s, ends_at = %s WHERE id = %s",
        (new_start, new_start + HOUR, session),
    )

    assert status_of(app_conn, session) == "scheduled"
    assert tick(app_conn, now + HOUR) == (0, 0)
    assert tick(app_conn, new_start) == (1, 0)
    assert tick(app_conn, new_start + HOUR) == (0, 1)
    assert status_of(app_conn, session) == "completed"


def test_start_moved_first_then_status(app_conn: psycopg.Connection) -> None:
    # The guard looks at starts_at as the row has it after the UPDATE, so
    # moving the times first and setting the status later also passes.
    now = app_conn.execute("SELECT now()").fetchone()[0]
    session = insert_session(app_conn, now - 2 * HOUR, now - HOUR, "completed")

    app_conn.execute(
        "UPDATE sessions SET starts_at = %s, ends_at = %s WHERE id = %s", (now + DAY, now + DAY + HOUR, session)
    )
    assert status_of(app_conn, session) == "completed"
    app_conn.execute("UPDATE sessions SET status = 'scheduled' WHERE id = %s", (session,))

    assert status_of(app_conn, session) == "scheduled"


def test_reschedule_into_past_rejected(app_conn: psycopg.Connection) -> None:
    now = app_conn.execute("SELECT now()").fetchone()[0]
    session = insert_session(app_conn, now - 2 * HOUR, now + HOUR, "open")

    with pytest.raises(psycopg.errors.CheckViolation, match="open -> scheduled"):
        app_conn.execute(
            "UPDATE sessions SET status = 'scheduled', starts_at = %s WHERE id = %s", (now - HOUR, session)
        )

    assert status_of(app_conn, session) == "open"


def test_reschedule_judged_at_transaction_start(app_conn: psycopg.Connection) -> None:
    # A starts_at 100 ms after now() passes even when the wall clock is
    # already beyond it: like the tick, the guard uses now() of the transaction.
    session = insert_session(
        app_conn, *app_conn.execute("SELECT now() - interval '2 hours', now() - interval '1 hour'").fetchone()
    )
    app_conn.execute("UPDATE sessions SET status = 'cancelled' WHERE id = %s", (session,))

    with app_conn.transaction():
        app_conn.execute("SELECT pg_sleep(0.3)")
        app_conn.execute(
            "UPDATE sessions SET status = 'scheduled', starts_at = now() + interval '100 milliseconds', "
            "ends_at = now() + interval '1 hour' WHERE id = %s",
            (session,),
        )
        passed = app_conn.execute(
            "SELECT clock_timestamp() > starts_at FROM sessions WHERE id = %s", (session,)
        ).fetchone()

    assert passed == (True,)
    assert status_of(app_conn, session) == "scheduled"


def test_open_session_moved_later_stays_open(app_conn: psycopg.Connection) -> None:
    now = app_conn.execute("SELECT now()").fetchone()[0]
    session = insert_session(app_conn, now - HOUR, now + HOUR)
    assert tick(app_conn, now) == (1, 0)

    # Both times move into the future without a status change: the tick
    # never sets a session back to scheduled, so it stays open until its new end.
    app_conn.execute(
        "UPDATE sessions SET starts_at = %s, ends_at = %s WHERE id = %s", (now + DAY, now + DAY + HOUR, session)
    )

    assert tick(app_conn, now + HOUR) == (0, 0)
    assert status_of(app_conn, session) == "open"
    assert tick(app_conn, now + DAY + HOUR - timedelta(microseconds=1)) == (0, 0)
    assert status_of(app_conn, session) == "open"
    assert tick(app_conn, now + DAY + HOUR) == (0, 1)
    assert status_of(app_conn, session) == "completed"


def test_open_session_shortened_completes(app_conn: psycopg.Connection) -> None:
    now = app_conn.execute("SELECT now()").fetchone()[0]
    session = insert_session(app_conn, now - HOUR, now + HOUR, "open")

    app_conn.execute("UPDATE sessions SET ends_at = %s WHERE id = %s", (now - timedelta(minutes=1), session))

    assert tick(app_conn, now) == (0, 1)
    assert status_of(app_conn, session) == "completed"


def test_scheduled_session_moved_earlier_opens(app_conn: psycopg.Connection) -> None:
    now = app_conn.execute("SELECT now()").fetchone()[0]
    session = insert_session(app_conn, now + HOUR, now + 2 * HOUR)

    app_conn.execute("UPDATE sessions SET starts_at = %s WHERE id = %s", (now - HOUR, session))

    assert tick(app_conn, now) == (1, 0)
    assert status_of(app_conn, session) == "open"


def test_full_session_reopened_by_app(app_conn: psycopg.Connection) -> None:
    now = app_conn.execute("SELECT now()").fetchone()[0]
    session = insert_session(app_conn, now - HOUR, now + HOUR, "full")

    assert tick(app_conn, now) == (0, 0)
    assert status_of(app_conn, session) == "full"
    app_conn.execute("UPDATE sessions SET status = 'open' WHERE id = %s", (session,))
    assert tick(app_conn, now + HOUR) == (0, 1)
    assert status_of(app_conn, session) == "completed"


def test_full_before_start_never_opened_by_tick(app_conn: psycopg.Connection) -> None:
    now = app_conn.execute("SELECT now()").fetchone()[0]
    session = insert_session(app_conn, now + HOUR, now + 2 * HOUR, "full")

    assert tick(app_conn, now + HOUR) == (0, 0)
    assert status_of(app_conn, session) == "full"
    assert tick(app_conn, now + 2 * HOUR) == (0, 1)
