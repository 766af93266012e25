"""Property test: random sessions, app updates and ticks give the same rows as the reference model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from tests.model import Model, Rejected

MINUTE = timedelta(minutes=1)
ZONES = ["UTC", "Asia/Tokyo", "America/Los_Angeles", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]


@dataclass(frozen=True)
class NewSession:
    start_minute: int
    minutes: int
    status: str


@dataclass(frozen=True)
class AppUpdate:
    """``UPDATE sessions SET ... WHERE id = <pick>``; None leaves a column out of the SET list."""

    pick: int
    status: str | None
    start_minute: int | None
    minutes: int | None


@dataclass(frozen=True)
class Tick:
    """A tick ``advance_minutes`` after the previous one, or at the next start or end of a session."""

    advance_minutes: int
    to_next_boundary: bool
    zone: str


new_sessions = st.builds(
    NewSession,
    start_minute=st.integers(-240, 600),
    minutes=st.integers(1, 300),
    status=st.sampled_from(["scheduled"] * 6 + ["open", "full", "cancelled", "completed"]),
)

app_updates = st.one_of(
    # cancel, mark full, reopen (full -> open), and an app-side complete
    st.builds(
        AppUpdate,
        pick=st.integers(0, 1000),
        status=st.sampled_from(["cancelled", "full", "open", "completed"]),
        start_minute=st.none(),
        minutes=st.none(),
    ),
    # reschedule: status 'scheduled' with new times, future or not
    st.builds(
        AppUpdate,
        pick=st.integers(0, 1000),
        status=st.just("scheduled"),
        start_minute=st.integers(-60, 600),
        minutes=st.integers(1, 300),
    ),
    # move times without touching the status; minutes <= 0 must be rejected
    st.builds(
        AppUpdate,
        pick=st.integers(0, 1000),
        status=st.none(),
        start_minute=st.integers(-240, 600),
        minutes=st.integers(-10, 300),
    ),
)

ticks = st.builds(
    Tick, advance_minutes=st.integers(0, 240), to_next_boundary=st.booleans(), zone=st.sampled_from(ZONES)
)
steps = st.lists(st.one_of(app_updates, ticks, ticks), min_size=1, max_size=25)


def _database_rows(conn: psycopg.Connection) -> list[tuple[int, datetime, datetime, str, datetime]]:
    return [
        tuple(row)  # type: ignore[misc]
        for row in conn.execute("SELECT id, starts_at, ends_at, status, status_changed_at FROM sessions ORDER BY id")
    ]


def _apply_update(conn: psycopg.Connection, model: Model, base: datetime, update: AppUpdate) -> None:
    session_id = sorted(model.sessions)[update.pick % len(model.sessions)]
    columns: dict[str, object] = {}
    if update.status is not None:
        columns["status"] = update.status
    if update.start_minute is not None and update.minutes is not None:
        starts_at = base + update.start_minute * MINUTE
        columns["starts_at"] = starts_at
        columns["ends_at"] = starts_at + update.minutes * MINUTE
    query = sql.SQL("UPDATE sessions SET {} WHERE id = {}").format(
        sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in columns),
        sql.Literal(session_id),
    )

    database_error: psycopg.errors.CheckViolation | None = None
    try:
        with conn.transaction():
            now = conn.execute("SELECT now()").fetchone()[0]
            conn.execute(query, columns)
    except psycopg.errors.CheckViolation as error:
        database_error = error

    try:
        model.update(session_id, now, **columns)  # type: ignore[arg-type]
    except Rejected as rejected:
        assert database_error is not None, f"database accepted {update}, model rejected it ({rejected})"
        assert database_error.diag.constraint_name == rejected.constraint
        if rejected.constraint is None:
            assert database_error.diag.column_name == "status"
            assert str(database_error).startswith(f"invalid status transition for session {session_id}")
    else:
        assert database_error is None, f"model accepted {update}, database rejected it: {database_error}"


def _next_instant(model: Model, as_of: datetime, tick: Tick) -> datetime:
    """Return the instant of ``tick``; ticks never go back in time."""
    if tick.to_next_boundary:
        boundaries = [
            instant
            for session in model.sessions.values()
            for instant in (session.starts_at, session.ends_at)
            if instant > as_of
        ]
        if boundaries:
            return min(boundaries)
    return as_of + tick.advance_minutes * MINUTE


def _apply_tick(conn: psycopg.Connection, model: Model, as_of: datetime, zone: str) -> None:
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL TimeZone = {}").format(sql.Literal(zone)))
        now = conn.execute("SELECT now()").fetchone()[0]
        counts = conn.execute("SELECT opened, completed FROM advance_session_statuses(%s)", (as_of,)).fetchone()

    assert counts == model.tick(as_of, now)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(initial=st.lists(new_sessions, min_size=1, max_size=8), steps=steps)
def test_tick_matches_model(
    app_conn: psycopg.Connection, initial: list[NewSession], steps: list[AppUpdate | Tick]
) -> None:
    app_conn.execute("TRUNCATE sessions RESTART IDENTITY")
    model = Model()
    base = app_conn.execute("SELECT date_trunc('minute', now())").fetchone()[0]
    for new in initial:
        starts_at = base + new.start_minute * MINUTE
        ends_at = starts_at + new.minutes * MINUTE
        with app_conn.transaction():
            now = app_conn.execute("SELECT now()").fetchone()[0]
            app_conn.execute(
                "INSERT INTO sessions (starts_at, ends_at, status) VALUES (%s, %s, %s)",
                (starts_at, ends_at, new.status),
            )
        model.insert(starts_at, ends_at, new.status, now)
    assert _database_rows(app_conn) == model.rows()

    as_of = base
    for step in steps:
        if isinstance(step, Tick):
            as_of = _next_instant(model, as_of, step)
            _apply_tick(app_conn, model, as_of, step.zone)
        else:
            _apply_update(app_conn, model, base, step)
        assert _database_rows(app_conn) == model.rows(), step

    # Whatever happened before, a second tick at the same instant finds no due row.
    _apply_tick(app_conn, model, as_of, "UTC")
    again = app_conn.execute("SELECT opened, completed FROM advance_session_statuses(%s)", (as_of,)).fetchone()
    assert again == (0, 0)
