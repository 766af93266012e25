"""The tick judges instants only: connection and database time zones, DST, local bookings."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from session_status.localtime import NonexistentLocalTimeError, local_to_instant, session_bounds
from session_status.sandbox import Sandbox
from tests.tick_helpers import expected_status, insert_session, status_of, statuses, tick

NEW_YORK = "America/New_York"
ZONES = ["UTC", "Asia/Tokyo", "America/Los_Angeles"]
MINUTE = timedelta(minutes=1)
MICROSECOND = timedelta(microseconds=1)
NINETY_MINUTES = timedelta(minutes=90)

# Clocks go back at 02:00 EDT (06:00 UTC) and forward at 02:00 EST (07:00 UTC).
FALL_BACK = date(2026, 11, 1)
SPRING_FORWARD = date(2026, 3, 8)

T0 = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
# (start offset, duration) in minutes from T0: sessions around the fall-back
# night and around local midnight in Tokyo and Los Angeles.
LAYOUT = [(-600, 90), (-30, 60), (0, 90), (45, 30), (90, 120), (120, 15), (600, 60), (1200, 45)]
TICK_OFFSETS = [-60, 0, 30, 60, 89, 90, 135, 200, 615, 1300]


def _insert_layout(conn: psycopg.Connection) -> list[tuple[int, datetime, datetime]]:
    rows = []
    for start, minutes in LAYOUT:
        starts_at = T0 + start * MINUTE
        ends_at = starts_at + minutes * MINUTE
        rows.append((insert_session(conn, starts_at, ends_at), starts_at, ends_at))
    return rows


def _run_ticks(conn: psycopg.Connection) -> list[dict[int, str]]:
    results = []
    for offset in TICK_OFFSETS:
        tick(conn, T0 + offset * MINUTE)
        results.append(statuses(conn))
    return results


# -- the helper, without a database -----------------------------------------------


def test_helper_fold_earlier_by_default() -> None:
    starts_at, ends_at = session_bounds(FALL_BACK, time(1, 0), NEW_YORK, NINETY_MINUTES)

    assert starts_at == datetime(2026, 11, 1, 5, 0, tzinfo=UTC)  # 01:00 EDT
    assert ends_at == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 EST
    assert ends_at.astimezone(ZoneInfo(NEW_YORK)).strftime("%H:%M %Z") == "01:30 EST"


def test_helper_fold_later() -> None:
    starts_at, ends_at = session_bounds(FALL_BACK, time(1, 0), NEW_YORK, NINETY_MINUTES, on_fold="later")

    assert starts_at == datetime(2026, 11, 1, 6, 0, tzinfo=UTC)  # 01:00 EST
    assert ends_at == datetime(2026, 11, 1, 7, 30, tzinfo=UTC)  # 02:30 EST


def test_helper_gap_rejected_by_default() -> None:
    with pytest.raises(NonexistentLocalTimeError, match=r"2026-03-08 02:30:00 in America/New_York") as raised:
        session_bounds(SPRING_FORWARD, time(2, 30), NEW_YORK, NINETY_MINUTES)

    assert isinstance(raised.value, ValueError)
    assert "on_gap='shift_forward'" in str(raised.value)


def test_helper_gap_shift_forward() -> None:
    starts_at, ends_at = session_bounds(SPRING_FORWARD, time(2, 30), NEW_YORK, NINETY_MINUTES, on_gap="shift_forward")

    assert starts_at == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT
    assert starts_at.astimezone(ZoneInfo(NEW_YORK)).strftime("%H:%M %Z") == "03:30 EDT"
    assert ends_at == starts_at + NINETY_MINUTES


def test_helper_fold_policy_ignored_outside_fold() -> None:
    earlier = local_to_instant(date(2026, 7, 1), time(9, 0), NEW_YORK, on_fold="earlier")
    later = local_to_instant(date(2026, 7, 1), time(9, 0), NEW_YORK, on_fold="later")

    assert earlier == later == datetime(2026, 7, 1, 13, 0, tzinfo=UTC)


def test_helper_duration_is_elapsed_across_spring_forward() -> None:
    starts_at, ends_at = session_bounds(SPRING_FORWARD, time(1, 30), NEW_YORK, NINETY_MINUTES)

    assert starts_at == datetime(2026, 3, 8, 6, 30, tzinfo=UTC)  # 01:30 EST
    assert ends_at.astimezone(ZoneInfo(NEW_YORK)).strftime("%H:%M %Z") == "04:00 EDT"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"on_gap": "ignore"}, "invalid on_gap 'ignore'"),
        ({"on_fold": "first"}, "invalid on_fold 'first'"),
        ({"duration": timedelta(0)}, "invalid duration 0:00:00"),
        ({"duration": -MINUTE}, "invalid duration"),
        ({"wall_time": time(1, 0, tzinfo=UTC)}, "invalid wall_time"),
    ],
)
def test_helper_rejects_invalid_arguments(arguments: dict[str, object], message: str) -> None:
    call: dict[str, object] = {"day": FALL_BACK, "wall_time": time(1, 0), "zone": NEW_YORK, "duration": MINUTE}
    call.update(arguments)

    with pytest.raises(ValueError, match=message):
        session_bounds(**call)  # type: ignore[arg-type]


# -- the tick under different time zones ----------------------------------------------


def test_tick_same_result_under_session_time_zones(app_conn: psycopg.Connection) -> None:
    results = {}
    for zone in ZONES:
        app_conn.execute("TRUNCATE sessions RESTART IDENTITY")
        app_conn.execute(sql.SQL("SET TimeZone = {}").format(sql.Literal(zone)))
        assert app_conn.execute("SHOW TimeZone").fetchone() == (zone,)
        layout = _insert_layout(app_conn)
        results[zone] = _run_ticks(app_conn)

        final_as_of = T0 + TICK_OFFSETS[-1] * MINUTE
        for session_id, starts_at, ends_at in layout:
            assert results[zone][-1][session_id] == expected_status(starts_at, ends_at, final_as_of)

    assert results["Asia/Tokyo"] == results["UTC"]
    assert results["America/Los_Angeles"] == results["UTC"]


def test_tick_same_result_under_database_time_zones(sandbox: Sandbox, migrated_database: str) -> None:
    results = {}
    for zone in ZONES:
        with sandbox.connect(migrated_database) as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET timezone = {}").format(
                    sql.Identifier(migrated_database), sql.Literal(zone)
                )
            )
            admin.execute("TRUNCATE sessions RESTART IDENTITY")
        # A new connection starts with the database default, as a pg_cron
        # job's connection does.
        with sandbox.connect(migrated_database) as conn:
            assert conn.execute("SHOW TimeZone").fetchone() == (zone,)
            _insert_layout(conn)
            ticked = []
            for offset in TICK_OFFSETS:
                conn.execute("CALL advance_session_statuses_in_batches(%s, 3)", (T0 + offset * MINUTE,))
                ticked.append(statuses(conn))
            results[zone] = ticked

    assert results["Asia/Tokyo"] == results["UTC"]
    assert results["America/Los_Angeles"] == results["UTC"]


def test_default_instant_ignores_time_zone(app_conn: psycopg.Connection) -> None:
    now = app_conn.execute("SELECT now()").fetchone()[0]
    started = insert_session(app_conn, now - MINUTE, now + timedelta(hours=10))
    # Starts five hours from now, so before the current Tokyo wall time
    # (UTC+9) read as UTC: a tick that mixed wall times with instants would
    # open it.
    later = insert_session(app_conn, now + timedelta(hours=5), now + timedelta(hours=6))

    app_conn.execute("SET TimeZone = 'Asia/Tokyo'")
    assert tick(app_conn) == (1, 0)

    assert status_of(app_conn, started) == "open"
    assert status_of(app_conn, later) == "scheduled"


# -- sessions booked in local time across DST -----------------------------------------


def _assert_opens_and_completes(
    conn: psycopg.Connection, session_id: int, starts_at: datetime, ends_at: datetime
) -> None:
    assert tick(conn, starts_at - MICROSECOND) == (0, 0)
    assert status_of(conn, session_id) == "scheduled"
    assert tick(conn, starts_at) == (1, 0)
    assert status_of(conn, session_id) == "open"
    assert tick(conn, ends_at - MICROSECOND) == (0, 0)
    assert status_of(conn, session_id) == "open"
    assert tick(conn, ends_at) == (0, 1)
    assert status_of(conn, session_id) == "completed"


@pytest.mark.parametrize("connection_zone", ["UTC", NEW_YORK, "Asia/Tokyo"])
@pytest.mark.parametrize("on_fold", ["earlier", "later"])
def test_fall_back_session_opens_and_completes(
    app_conn: psycopg.Connection, connection_zone: str, on_fold: str
) -> None:
    app_conn.execute(sql.SQL("SET TimeZone = {}").format(sql.Literal(connection_zone)))
    starts_at, ends_at = session_bounds(FALL_BACK, time(1, 0), NEW_YORK, NINETY_MINUTES, on_fold=on_fold)  # type: ignore[arg-type]
    session_id = insert_session(app_conn, starts_at, ends_at)

    stored = app_conn.execute("SELECT ends_at - starts_at FROM sessions WHERE id = %s", (session_id,)).fetchone()
    assert stored == (NINETY_MINUTES,)
    _assert_opens_and_completes(app_conn, session_id, starts_at, ends_at)


@pytest.mark.parametrize("connection_zone", ["UTC", NEW_YORK])
def test_spring_forward_session_opens_and_completes(app_conn: psycopg.Connection, connection_zone: str) -> None:
    app_conn.execute(sql.SQL("SET TimeZone = {}").format(sql.Literal(connection_zone)))
    starts_at, ends_at = session_bounds(SPRING_FORWARD, time(2, 30), NEW_YORK, NINETY_MINUTES, on_gap="shift_forward")
    session_id = insert_session(app_conn, starts_at, ends_at)

    _assert_opens_and_completes(app_conn, session_id, starts_at, ends_at)


def test_sql_at_time_zone_matches_helper_policies(app_conn: psycopg.Connection) -> None:
    # PostgreSQL reads a folded wall time as the later occurrence and a
    # skipped one with the offset before the gap: the helper's "later" and
    # "shift_forward" choices.
    query = "SELECT (%s::date + %s::time) AT TIME ZONE %s"
    for connection_zone in ZONES:
        app_conn.execute(sql.SQL("SET TimeZone = {}").format(sql.Literal(connection_zone)))

        folded = app_conn.execute(query, (FALL_BACK, time(1, 0), NEW_YORK)).fetchone()
        skipped = app_conn.execute(query, (SPRING_FORWARD, time(2, 30), NEW_YORK)).fetchone()

        assert folded == (local_to_instant(FALL_BACK, time(1, 0), NEW_YORK, on_fold="later"),)
        assert skipped == (local_to_instant(SPRING_FORWARD, time(2, 30), NEW_YORK, on_gap="shift_forward"),)


def test_sql_booking_with_elapsed_duration(app_conn: psycopg.Connection) -> None:
    app_conn.execute("SET TimeZone = 'Asia/Tokyo'")
    row = app_conn.execute(
        "INSERT INTO sessions (starts_at, ends_at) "
        "SELECT s, s + interval '90 minutes' "
        "FROM (SELECT (date '2026-11-01' + time '01:00') AT TIME ZONE 'America/New_York' AS s) AS booking "
        "RETURNING id, starts_at, ends_at"
    ).fetchone()
    assert row is not None
    session_id, starts_at, ends_at = row

    assert (starts_at, ends_at) == session_bounds(FALL_BACK, time(1, 0), NEW_YORK, NINETY_MINUTES, on_fold="later")
    _assert_opens_and_completes(app_conn, session_id, starts_at, ends_at)


# The SQL recipes of docs/time-zones.md, with %(day)s, %(wall_time)s and %(zone)s.
SQL_LATER_OR_SHIFTED = "SELECT (%(day)s::date + %(wall_time)s::time) AT TIME ZONE %(zone)s"
SQL_IS_NONEXISTENT = """
SELECT ((local AT TIME ZONE %(zone)s) AT TIME ZONE %(zone)s) <> local
FROM (SELECT %(day)s::date + %(wall_time)s::time AS local) AS booking
"""
SQL_EARLIER_OR_SHIFTED = """
SELECT CASE WHEN (earlier AT TIME ZONE %(zone)s) = local THEN earlier
            ELSE local AT TIME ZONE %(zone)s END
FROM (SELECT local, ((local - interval '1 day') AT TIME ZONE %(zone)s) + interval '24 hours' AS earlier
      FROM (SELECT %(day)s::date + %(wall_time)s::time AS local) AS booking) AS candidates
"""
# Transition days of 2026: New York (one hour), Lord Howe Island (30 minutes)
# and Dublin (whose tz rules call winter time the daylight saving time).
TRANSITION_DAYS = [
    ("America/New_York", date(2026, 3, 8)),
    ("America/New_York", date(2026, 11, 1)),
    ("Australia/Lord_Howe", date(2026, 4, 5)),
    ("Australia/Lord_Howe", date(2026, 10, 4)),
    ("Europe/Dublin", date(2026, 3, 29)),
    ("Europe/Dublin", date(2026, 10, 25)),
]


def _utc(row: tuple[datetime] | None) -> datetime:
    # psycopg returns the value in the connection's zone, and Python's ==
    # treats an aware datetime in a fold as unequal to any other zone's
    # (PEP 495), so compare in UTC.
    assert row is not None
    return row[0].astimezone(UTC)


@pytest.mark.parametrize("connection_zone", ["Asia/Tokyo", NEW_YORK, "Australia/Lord_Howe"])
@pytest.mark.parametrize(("zone", "day"), TRANSITION_DAYS)
def test_sql_recipes_match_helper(app_conn: psycopg.Connection, zone: str, day: date, connection_zone: str) -> None:
    app_conn.execute(sql.SQL("SET TimeZone = {}").format(sql.Literal(connection_zone)))
    seen_gap = seen_fold = False
    for minute in range(0, 4 * 60, 5):
        wall_time = time(minute // 60, minute % 60)
        arguments = {"day": day, "wall_time": wall_time, "zone": zone}
        later = local_to_instant(day, wall_time, zone, on_fold="later", on_gap="shift_forward")
        earlier = local_to_instant(day, wall_time, zone, on_fold="earlier", on_gap="shift_forward")
        try:
            local_to_instant(day, wall_time, zone)
            nonexistent = False
        except NonexistentLocalTimeError:
            nonexistent = True
        seen_gap = seen_gap or nonexistent
        seen_fold = seen_fold or earlier != later

        assert _utc(app_conn.execute(SQL_LATER_OR_SHIFTED, arguments).fetchone()) == later, wall_time
        assert _utc(app_conn.execute(SQL_EARLIER_OR_SHIFTED, arguments).fetchone()) == earlier, wall_time
        assert app_conn.execute(SQL_IS_NONEXISTENT, arguments).fetchone() == (nonexistent,), wall_time

    assert seen_gap or seen_fold
