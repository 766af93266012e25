"""advance_session_statuses(): each transition at explicit instants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def insert_session(conn: psycopg.Connection, starts_at: datetime, ends_at: datetime, status: str = "scheduled") -> int:
    row = conn.execute(
        "INSERT INTO sessions (starts_at, ends_at, status) VALUES (%s, %s, %s) RETURNING id",
        (starts_at, ends_at, status),
    ).fetchone()
    assert row is not None
    return int(row[0])


def status_of(conn: psycopg.Connection, session_id: int) -> str:
    row = conn.execute("SELECT status FROM sessions WHERE id = %s", (session_id,)).fetchone()
    assert row is not None
    return str(row[0])


def tick(conn: psycopg.Connection, as_of: datetime) -> tuple[int, int]:
    row = conn.execute("SELECT opened, completed FROM advance_session_statuses(%s)", (as_of,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_tick_opens_at_start(app_conn: psycopg.Connection) -> None:
    session = insert_session(app_conn, T0, T0 + HOUR)

    assert tick(app_conn, T0 - timedelta(microseconds=1)) == (0, 0)
    assert status_of(app_conn, session) == "scheduled"

    assert tick(app_conn, T0) == (1, 0)
    assert status_of(app_conn, session) == "open"


def test_tick_completes_open_and_full_at_end(app_conn: psycopg.Connection) -> None:
    open_session = insert_session(app_conn, T0, T0 + HOUR, "open")
    full_session = insert_session(app_conn, T0, T0 + HOUR, "full")

    assert tick(app_conn, T0 + HOUR - timedelta(microseconds=1)) == (0, 0)
    assert tick(app_conn, T0 + HOUR) == (0, 2)
    assert status_of(app_conn, open_session) == "completed"
    assert status_of(app_conn, full_session) == "completed"


def test_tick_catches_up_missed_session(app_conn: psycopg.Connection) -> None:
    # The job was down for the whole session: one call goes straight to completed.
    session = insert_session(app_conn, T0, T0 + HOUR)

    assert tick(app_conn, T0 + 2 * HOUR) == (0, 1)
    assert status_of(app_conn, session) == "completed"


def test_tick_leaves_final_statuses_alone(app_conn: psycopg.Connection) -> None:
    cancelled = insert_session(app_conn, T0, T0 + HOUR, "cancelled")
    completed = insert_session(app_conn, T0 + 5 * HOUR, T0 + 6 * HOUR, "completed")
    before = app_conn.execute("SELECT id, status, status_changed_at FROM sessions ORDER BY id").fetchall()

    assert tick(app_conn, T0 + 10 * HOUR) == (0, 0)

    after = app_conn.execute("SELECT id, status, status_changed_at FROM sessions ORDER BY id").fetchall()
    assert after == before
    assert status_of(app_conn, cancelled) == "cancelled"
    assert status_of(app_conn, completed) == "completed"


def test_tick_second_call_changes_nothing(app_conn: psycopg.Connection) -> None:
    insert_session(app_conn, T0 - HOUR, T0 + HOUR)
    insert_session(app_conn, T0 - 2 * HOUR, T0 - HOUR)
    insert_session(app_conn, T0 + HOUR, T0 + 2 * HOUR)

    assert tick(app_conn, T0) == (1, 1)
    snapshot = app_conn.execute("SELECT id, status, status_changed_at FROM sessions ORDER BY id").fetchall()

    assert tick(app_conn, T0) == (0, 0)
    assert app_conn.execute("SELECT id, status, status_changed_at FROM sessions ORDER BY id").fetchall() == snapshot


def test_tick_respects_max_transitions(app_conn: psycopg.Connection) -> None:
    for offset in range(5):
        insert_session(app_conn, T0 - 3 * HOUR + offset * timedelta(minutes=1), T0 - HOUR)
    for offset in range(3):
        insert_session(app_conn, T0 - HOUR + offset * timedelta(minutes=1), T0 + HOUR)

    row = app_conn.execute("SELECT opened, completed FROM advance_session_statuses(%s, 4)", (T0,)).fetchone()
    assert row == (0, 4)
    row = app_conn.execute("SELECT opened, completed FROM advance_session_statuses(%s, 4)", (T0,)).fetchone()
    assert row == (3, 1)
    assert tick(app_conn, T0) == (0, 0)


def test_batching_procedure_clears_backlog(app_conn: psycopg.Connection) -> None:
    app_conn.execute(
        "INSERT INTO sessions (starts_at, ends_at) "
        "SELECT %s - i * interval '1 minute', %s + interval '1 hour' - i * interval '1 second' "
        "FROM generate_series(1, 250) AS i",
        (T0, T0),
    )
    app_conn.execute(
        "INSERT INTO sessions (starts_at, ends_at) "
        "SELECT %s - interval '1 day', %s - i * interval '1 second' FROM generate_series(1, 130) AS i",
        (T0, T0),
    )

    app_conn.execute("CALL advance_session_statuses_in_batches(%s, 7)", (T0,))

    counts = dict(app_conn.execute("SELECT status, count(*) FROM sessions GROUP BY status").fetchall())
    assert counts == {"open": 250, "completed": 130}


def test_tick_default_instant_is_transaction_start(app_conn: psycopg.Connection) -> None:
    now = app_conn.execute("SELECT now()").fetchone()[0]
    session = insert_session(app_conn, now - HOUR, now + HOUR)

    row = app_conn.execute("SELECT opened, completed FROM advance_session_statuses()").fetchone()

    assert row == (1, 0)
    assert status_of(app_conn, session) == "open"


@pytest.mark.parametrize("as_of", ["NULL", "'infinity'::timestamptz", "'-infinity'::timestamptz"])
def test_tick_rejects_invalid_instant(app_conn: psycopg.Connection, as_of: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid as_of"):
        app_conn.execute(f"SELECT advance_session_statuses({as_of})")


def test_tick_rejects_invalid_max_transitions(app_conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid max_transitions 0"):
        app_conn.execute("SELECT advance_session_statuses(now(), 0)")


def test_batching_procedure_rejects_invalid_batch_size(app_conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid batch_size 0"):
        app_conn.execute("CALL advance_session_statuses_in_batches(now(), 0)")
