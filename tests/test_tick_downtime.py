"""A week without the job: one CALL catches up in bounded batches while the app keeps writing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.tick_helpers import (
    PAUSED_APPLICATION_NAME,
    PausePoint,
    backend_pid,
    expected_status,
    history,
    install_history,
    locked_row_count,
    statuses,
    tick,
)

T0 = datetime(2026, 10, 26, 0, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
BATCH_SIZE = 400
# More advisory locks than the CALL can reach: two UPDATE statements per batch.
MAX_PAUSES = 200


def _insert_two_weeks(conn: psycopg.Connection, every_minutes: int) -> None:
    """Insert a session every ``every_minutes`` from a day before T0 to eight days after.

    Durations vary from 20 to 140 minutes. Every 13th session is full and
    every 17th cancelled, both set by the app at T0.
    """
    conn.execute(
        "INSERT INTO sessions (starts_at, ends_at) "
        "SELECT %(t0)s + g * %(step)s, %(t0)s + g * %(step)s + (20 + (abs(g) * 7) %% 121) * interval '1 minute' "
        "FROM generate_series(-1440 / %(minutes)s, 8 * 1440 / %(minutes)s) AS g",
        {"t0": T0, "step": timedelta(minutes=every_minutes), "minutes": every_minutes},
    )
    tick(conn, T0)
    conn.execute("UPDATE sessions SET status = 'full' WHERE id % 13 = 0 AND status IN ('scheduled', 'open')")
    conn.execute("UPDATE sessions SET status = 'cancelled' WHERE id % 17 = 0 AND status IN ('scheduled', 'open')")


def _expected_after(conn: psycopg.Connection, as_of: datetime) -> dict[int, str]:
    """Return the status every session must have after catching up to ``as_of`` from its current status."""
    expected = {}
    for session_id, starts_at, ends_at, status in conn.execute("SELECT id, starts_at, ends_at, status FROM sessions"):
        if status in ("cancelled", "completed"):
            expected[session_id] = status
        elif status == "full":
            expected[session_id] = "completed" if ends_at <= as_of else "full"
        else:
            expected[session_id] = expected_status(starts_at, ends_at, as_of)
    return expected


def _changes_per_transaction(conn: psycopg.Connection, application: str) -> list[int]:
    per_txid = Counter(txid for _id, _old, _new, txid, app in history(conn) if app == application)
    return [per_txid[txid] for txid in sorted(per_txid)]


def test_week_of_downtime_caught_up_in_batches(
    app_conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    _insert_two_weeks(app_conn, every_minutes=3)
    install_history(app_conn)
    holder = connect()
    gate = PausePoint(app_conn, holder, "AFTER", pauses=MAX_PAUSES)
    as_of = T0 + WEEK
    expected = _expected_after(app_conn, as_of)
    due = sum(1 for session_id, status in statuses(app_conn).items() if expected[session_id] != status)
    assert due > 5 * BATCH_SIZE

    tick_conn = connect(application_name=PAUSED_APPLICATION_NAME)
    tick_pid = backend_pid(tick_conn)
    app = connect()
    app.execute("SET lock_timeout = '200ms'")
    # Rows locked by the paused CALL, by transaction id, at every pause.
    locked_by_xid: dict[int, list[int]] = {}
    app_writes = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(tick_conn.execute, "CALL advance_session_statuses_in_batches(%s, %s)", (as_of, BATCH_SIZE))
        step = 1
        while gate.wait_paused(tick_pid, step, until=call):
            # The paused batch has run an UPDATE and holds its row locks.
            xid_row = holder.execute("SELECT backend_xid::text FROM pg_stat_activity WHERE pid = %s", (tick_pid,))
            xid = xid_row.fetchone()
            locked = locked_row_count(holder)
            assert locked <= BATCH_SIZE
            if xid is not None and xid[0] is not None:
                locked_by_xid.setdefault(int(xid[0]), []).append(locked)

            # The app changes a due row that the paused batch did not take,
            # within its 200 ms lock_timeout.
            with app.transaction():
                row = app.execute(
                    "SELECT id FROM sessions WHERE status IN ('scheduled', 'open', 'full') AND ends_at <= %s "
                    "ORDER BY ends_at DESC LIMIT 1 FOR UPDATE SKIP LOCKED",
                    (as_of,),
                ).fetchone()
                if row is not None:
                    app.execute("UPDATE sessions SET title = 'edited during catch-up' WHERE id = %s", (row[0],))
                    app_writes += 1

            # The locks are real: a row of the paused batch makes the app
            # wait until its lock_timeout.
            if step == 1:
                with holder.transaction(force_rollback=True):
                    held = holder.execute(
                        "SELECT id FROM sessions WHERE id NOT IN (SELECT id FROM sessions FOR UPDATE SKIP LOCKED) "
                        "LIMIT 1"
                    ).fetchone()
                assert held is not None
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    app.execute("UPDATE sessions SET title = 'blocked' WHERE id = %s", (held[0],))

            gate.release(step)
            step += 1
        call.result(timeout=60)
        gate.release_all()

    per_transaction = _changes_per_transaction(app_conn, PAUSED_APPLICATION_NAME)
    assert sum(per_transaction) == due
    assert max(per_transaction) == BATCH_SIZE
    assert all(count <= BATCH_SIZE for count in per_transaction)
    assert len(per_transaction) == -(-due // BATCH_SIZE)
    # After each batch's last UPDATE, the rows it holds locked are exactly
    # the rows it changed: the tick locks no row that it does not update.
    assert [max(counts) for _xid, counts in sorted(locked_by_xid.items())] == per_transaction
    assert app_writes > 0
    assert statuses(app_conn) == expected


def test_catch_up_without_pauses(app_conn: psycopg.Connection) -> None:
    _insert_two_weeks(app_conn, every_minutes=1)
    install_history(app_conn)
    as_of = T0 + WEEK
    expected = _expected_after(app_conn, as_of)
    before = statuses(app_conn)
    due = sum(1 for session_id, status in before.items() if expected[session_id] != status)
    assert len(before) > 10_000

    app_conn.execute("SET application_name = 'catch-up'")
    app_conn.execute("CALL advance_session_statuses_in_batches(%s, 1000)", (as_of,))

    per_transaction = _changes_per_transaction(app_conn, "catch-up")
    assert sum(per_transaction) == due
    assert all(count <= 1000 for count in per_transaction)
    assert statuses(app_conn) == expected
    assert tick(app_conn, as_of) == (0, 0)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_catch_up_same_result_any_batch_size(app_conn: psycopg.Connection, batch_size: int) -> None:
    _insert_two_weeks(app_conn, every_minutes=60)
    as_of = T0 + WEEK
    expected = _expected_after(app_conn, as_of)

    app_conn.execute("CALL advance_session_statuses_in_batches(%s, %s)", (as_of, batch_size))

    assert statuses(app_conn) == expected
