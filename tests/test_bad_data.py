"""Constraints and the status guard reject what cannot be a session, with errors that name the cause."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.tick_helpers import insert_session, status_of

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

INSERT = "INSERT INTO sessions (starts_at, ends_at, status, capacity) VALUES ({}, {}, {}, {})"
GOOD = {"starts_at": "'2026-06-01 09:00Z'", "ends_at": "'2026-06-01 10:00Z'", "status": "'scheduled'", "capacity": "10"}


def _insert_sql(**overrides: str) -> str:
    values = dict(GOOD, **overrides)
    return INSERT.format(values["starts_at"], values["ends_at"], values["status"], values["capacity"])


@pytest.mark.parametrize(
    ("overrides", "column"),
    [
        ({"starts_at": "NULL"}, "starts_at"),
        ({"ends_at": "NULL"}, "ends_at"),
        ({"status": "NULL"}, "status"),
    ],
)
def test_null_column_rejected(app_conn: psycopg.Connection, overrides: dict[str, str], column: str) -> None:
    with pytest.raises(psycopg.errors.NotNullViolation) as raised:
        app_conn.execute(_insert_sql(**overrides))

    assert raised.value.diag.column_name == column
    assert raised.value.diag.table_name == "sessions"


@pytest.mark.parametrize(
    ("overrides", "constraint"),
    [
        ({"ends_at": "'2026-06-01 08:00Z'"}, "sessions_ends_at_after_starts_at_check"),
        ({"ends_at": "'2026-06-01 09:00Z'"}, "sessions_ends_at_after_starts_at_check"),
        # The same instant written in another offset is still equal.
        ({"ends_at": "'2026-06-01 18:00+09'"}, "sessions_ends_at_after_starts_at_check"),
        ({"starts_at": "'-infinity'"}, "sessions_starts_at_ends_at_finite_check"),
        ({"ends_at": "'infinity'"}, "sessions_starts_at_ends_at_finite_check"),
        ({"starts_at": "'-infinity'", "ends_at": "'infinity'"}, "sessions_starts_at_ends_at_finite_check"),
        ({"status": "'done'"}, "sessions_status_check"),
        ({"status": "'Open'"}, "sessions_status_check"),
        ({"status": "''"}, "sessions_status_check"),
        ({"capacity": "0"}, "sessions_capacity_positive_check"),
        ({"capacity": "-5"}, "sessions_capacity_positive_check"),
    ],
)
def test_invalid_insert_names_constraint(
    app_conn: psycopg.Connection, overrides: dict[str, str], constraint: str
) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as raised:
        app_conn.execute(_insert_sql(**overrides))

    assert raised.value.diag.constraint_name == constraint
    assert raised.value.diag.table_name == "sessions"


@pytest.mark.parametrize(
    ("assignment", "constraint"),
    [
        ("ends_at = starts_at", "sessions_ends_at_after_starts_at_check"),
        ("starts_at = ends_at + interval '1 minute'", "sessions_ends_at_after_starts_at_check"),
        ("ends_at = 'infinity'", "sessions_starts_at_ends_at_finite_check"),
        ("status = 'paused'", "sessions_status_check"),
        ("capacity = 0", "sessions_capacity_positive_check"),
    ],
)
def test_invalid_update_names_constraint(app_conn: psycopg.Connection, assignment: str, constraint: str) -> None:
    session = insert_session(app_conn, T0, T0 + HOUR)

    with pytest.raises(psycopg.errors.CheckViolation) as raised:
        app_conn.execute(f"UPDATE sessions SET {assignment} WHERE id = %s", (session,))

    assert raised.value.diag.constraint_name == constraint
    assert status_of(app_conn, session) == "scheduled"


def test_valid_edge_values_accepted(app_conn: psycopg.Connection) -> None:
    one_microsecond = insert_session(app_conn, T0, T0 + timedelta(microseconds=1))
    no_capacity = insert_session(app_conn, T0, T0 + HOUR, capacity=None)
    one_seat = insert_session(app_conn, T0, T0 + HOUR, capacity=1)

    assert {status_of(app_conn, i) for i in (one_microsecond, no_capacity, one_seat)} == {"scheduled"}


# -- the status guard ----------------------------------------------------------------

ALL_STATUSES = ["scheduled", "open", "full", "completed", "cancelled"]
FORBIDDEN = [
    (old, new)
    for old, new in itertools.product(["completed", "cancelled"], ALL_STATUSES)
    if new not in (old, "scheduled")
]
ALLOWED_FORWARD = [
    ("scheduled", "open"),
    ("scheduled", "full"),
    ("scheduled", "completed"),
    ("scheduled", "cancelled"),
    ("open", "full"),
    ("full", "open"),
    ("open", "completed"),
    ("open", "cancelled"),
    ("full", "completed"),
    ("full", "cancelled"),
]


@pytest.mark.parametrize(("old", "new"), FORBIDDEN)
def test_final_status_cannot_change(app_conn: psycopg.Connection, old: str, new: str) -> None:
    session = insert_session(app_conn, T0, T0 + HOUR, old)

    with pytest.raises(psycopg.errors.CheckViolation) as raised:
        app_conn.execute("UPDATE sessions SET status = %s WHERE id = %s", (new, session))

    diag = raised.value.diag
    assert diag.message_primary == f"invalid status transition for session {session}: {old} -> {new}"
    assert diag.column_name == "status"
    assert diag.constraint_name is None
    assert diag.message_detail == f"{old} is a final status."
    assert diag.message_hint is not None
    assert "reschedule" in diag.message_hint
    assert status_of(app_conn, session) == old


@pytest.mark.parametrize("old", ["open", "full", "completed", "cancelled"])
def test_back_to_scheduled_needs_future_start(app_conn: psycopg.Connection, old: str) -> None:
    now = app_conn.execute("SELECT now()").fetchone()[0]
    session = insert_session(app_conn, now - HOUR, now + HOUR, old)

    with pytest.raises(psycopg.errors.CheckViolation) as raised:
        app_conn.execute("UPDATE sessions SET status = 'scheduled' WHERE id = %s", (session,))

    diag = raised.value.diag
    assert diag.message_primary == f"invalid status transition for session {session}: {old} -> scheduled"
    assert diag.column_name == "status"
    assert diag.message_detail is not None
    assert "is not in the future" in diag.message_detail
    assert status_of(app_conn, session) == old


@pytest.mark.parametrize(("old", "new"), ALLOWED_FORWARD)
def test_forward_transition_allowed(app_conn: psycopg.Connection, old: str, new: str) -> None:
    session = insert_session(app_conn, T0, T0 + HOUR, old)

    with app_conn.transaction():
        now = app_conn.execute("SELECT now()").fetchone()[0]
        app_conn.execute("UPDATE sessions SET status = %s WHERE id = %s", (new, session))

    row = app_conn.execute("SELECT status, status_changed_at FROM sessions WHERE id = %s", (session,)).fetchone()
    assert row == (new, now)


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_same_status_is_no_change(app_conn: psycopg.Connection, status: str) -> None:
    session = insert_session(app_conn, T0, T0 + HOUR, status)
    before = app_conn.execute("SELECT status_changed_at FROM sessions WHERE id = %s", (session,)).fetchone()

    app_conn.execute("UPDATE sessions SET status = %s WHERE id = %s", (status, session))

    after = app_conn.execute("SELECT status_changed_at FROM sessions WHERE id = %s", (session,)).fetchone()
    assert after == before
