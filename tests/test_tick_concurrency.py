"""The tick next to the app on real concurrent connections: skipped locks, rechecks, no deadlock.

Every tick connection here runs with a lock_timeout, so a tick that waited
for a row lock would fail the test with LockNotAvailable instead of hanging.
Orderings that matter are forced with the pause point of tick_helpers
(advisory locks), never with sleeps.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.tick_helpers import (
    PAUSED_APPLICATION_NAME,
    PausePoint,
    backend_pid,
    expected_status,
    history,
    insert_session,
    install_history,
    locked_row_count,
    status_of,
    statuses,
    tick,
)

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def tick_conn(connect: Callable[..., psycopg.Connection]) -> psycopg.Connection:
    return connect(application_name="tick")


# -- rows that the app holds locked ----------------------------------------------------


@pytest.mark.parametrize(
    "lock_statement",
    [
        "SELECT 1 FROM sessions WHERE id = %s FOR UPDATE",
        "SELECT 1 FROM sessions WHERE id = %s FOR NO KEY UPDATE",
        "UPDATE sessions SET title = 'renamed' WHERE id = %s",
    ],
)
def test_tick_skips_locked_row(
    app_conn: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    tick_conn: psycopg.Connection,
    lock_statement: str,
) -> None:
    locked = insert_session(app_conn, T0 - HOUR, T0 + HOUR)
    free = insert_session(app_conn, T0 - HOUR, T0 + HOUR)
    app = connect(autocommit=False)
    app.execute(lock_statement, (locked,))

    # Returns at once with the free row only; a wait would hit lock_timeout.
    assert tick(tick_conn, T0) == (1, 0)
    assert status_of(tick_conn, locked) == "scheduled"
    assert status_of(tick_conn, free) == "open"

    app.commit()
    assert tick(tick_conn, T0) == (1, 0)
    assert status_of(tick_conn, locked) == "open"


def test_tick_skips_locked_due_to_complete(
    app_conn: psycopg.Connection, connect: Callable[..., psycopg.Connection], tick_conn: psycopg.Connection
) -> None:
    locked = insert_session(app_conn, T0 - 2 * HOUR, T0 - HOUR, "open")
    app = connect(autocommit=False)
    app.execute("SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", (locked,))

    assert tick(tick_conn, T0) == (0, 0)
    assert status_of(tick_conn, locked) == "open"

    app.rollback()
    assert tick(tick_conn, T0) == (0, 1)
    assert status_of(tick_conn, locked) == "completed"


@pytest.mark.parametrize(("app_status", "final_status"), [("cancelled", "cancelled"), ("full", "completed")])
def test_app_decision_while_locked_is_kept(
    app_conn: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    tick_conn: psycopg.Connection,
    app_status: str,
    final_status: str,
) -> None:
    session = insert_session(app_conn, T0 - HOUR, T0 + HOUR)
    app = connect(autocommit=False)
    app.execute("SELECT status FROM sessions WHERE id = %s FOR UPDATE", (session,))

    assert tick(tick_conn, T0) == (0, 0)
    app.execute("UPDATE sessions SET status = %s WHERE id = %s", (app_status, session))
    app.commit()

    assert tick(tick_conn, T0) == (0, 0)
    assert status_of(tick_conn, session) == app_status
    assert tick(tick_conn, T0 + HOUR) == (0, 1 if final_status == "completed" else 0)
    assert status_of(tick_conn, session) == final_status


# -- a change committed after the tick's snapshot, before its row lock -----------------------------


@pytest.mark.parametrize(
    ("due", "pause", "app_update"),
    [
        ("open", 2, "UPDATE sessions SET status = 'full' WHERE id = %(id)s"),
        ("open", 2, "UPDATE sessions SET status = 'cancelled' WHERE id = %(id)s"),
        (
            "open",
            2,
            "UPDATE sessions SET starts_at = %(later)s, ends_at = %(later)s + interval '1 hour' WHERE id = %(id)s",
        ),
        ("complete", 1, "UPDATE sessions SET status = 'cancelled' WHERE id = %(id)s"),
        ("complete", 1, "UPDATE sessions SET ends_at = %(later)s WHERE id = %(id)s"),
    ],
    ids=["open-full", "open-cancelled", "open-moved", "complete-cancelled", "complete-extended"],
)
def test_change_after_snapshot_is_rechecked(
    app_conn: psycopg.Connection,
    connect: Callable[..., psycopg.Connection],
    due: str,
    pause: int,
    app_update: str,
) -> None:
    # Pause 1 is the completing UPDATE, pause 2 the opening UPDATE, each
    # after its snapshot and before it reads or locks a row.
    install_history(app_conn)
    holder = connect()
    gate = PausePoint(app_conn, holder, "BEFORE", pauses=2)
    if due == "open":
        changed = insert_session(app_conn, T0 - HOUR, T0 + HOUR)
        control = insert_session(app_conn, T0 - HOUR, T0 + HOUR)
    else:
        changed = insert_session(app_conn, T0 - 2 * HOUR, T0 - HOUR, "open")
        control = insert_session(app_conn, T0 - 2 * HOUR, T0 - HOUR, "open")
    paused_tick = connect(application_name=PAUSED_APPLICATION_NAME)
    app = connect()

    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(tick, paused_tick, T0)
        for step in range(1, pause):
            gate.wait_paused(backend_pid(paused_tick), step)
            gate.release(step)
        gate.wait_paused(backend_pid(paused_tick), pause)
        app.execute(app_update, {"id": changed, "later": T0 + 3 * HOUR})
        gate.release_all()
        counts = result.result(timeout=30)

    changed_status = status_of(app_conn, changed)
    if due == "open":
        assert counts == (1, 0)
        assert status_of(app_conn, control) == "open"
        assert changed_status in ("full", "cancelled", "scheduled")
    else:
        assert counts == (0, 1)
        assert status_of(app_conn, control) == "completed"
        assert changed_status in ("cancelled", "open")
    tick_changes = [entry for entry in history(app_conn) if entry[4] == PAUSED_APPLICATION_NAME]
    assert [entry[0] for entry in tick_changes] == [control]


# -- two ticks at once ---------------------------------------------------------------


def _insert_due_mix(conn: psycopg.Connection) -> int:
    """Insert sessions of which 60 are due at T0 (30 to open, 30 to complete) and return 60."""
    conn.execute(
        "INSERT INTO sessions (starts_at, ends_at) "
        "SELECT %(t0)s - g * interval '1 minute', %(t0)s + interval '1 hour' FROM generate_series(1, 30) AS g",
        {"t0": T0},
    )
    conn.execute(
        "INSERT INTO sessions (starts_at, ends_at, status) "
        "SELECT %(t0)s - interval '3 hours', %(t0)s - g * interval '1 minute', "
        "(ARRAY['scheduled', 'open', 'full'])[1 + g %% 3] FROM generate_series(1, 30) AS g",
        {"t0": T0},
    )
    conn.execute(
        "INSERT INTO sessions (starts_at, ends_at) "
        "SELECT %(t0)s + g * interval '1 minute', %(t0)s + interval '2 hours' FROM generate_series(1, 10) AS g",
        {"t0": T0},
    )
    return 60


def _assert_each_due_row_changed_once(conn: psycopg.Connection) -> None:
    entries = history(conn)
    changed_ids = [entry[0] for entry in entries]
    assert len(changed_ids) == len(set(changed_ids)), "a session changed status twice"
    final = statuses(conn)
    for session_id, _old, new, _txid, _application in entries:
        assert final[session_id] == new


def test_two_open_transactions_tick_once(
    app_conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    install_history(app_conn)
    due = _insert_due_mix(app_conn)
    first = connect(autocommit=False)
    second = connect(autocommit=False)

    # The first call locks half of the due rows and keeps them until commit;
    # the second skips those rows and takes the rest without waiting.
    first_counts = tick(first, T0, due // 2)
    second_counts = tick(second, T0)
    third = connect(autocommit=False)
    third_counts = tick(third, T0)
    first.commit()
    second.commit()
    third.commit()

    assert sum(first_counts) == due // 2
    assert third_counts == (0, 0)
    assert sum(first_counts) + sum(second_counts) == due
    assert first_counts[1] + second_counts[1] == 30
    _assert_each_due_row_changed_once(app_conn)
    assert tick(app_conn, T0) == (0, 0)


@pytest.mark.parametrize("pause", [1, 2], ids=["completing", "opening"])
def test_second_tick_after_first_commits(
    app_conn: psycopg.Connection, connect: Callable[..., psycopg.Connection], pause: int
) -> None:
    # The paused call has its snapshot from before the other call committed,
    # so every due row it finds was changed meanwhile and fails the recheck.
    install_history(app_conn)
    due = _insert_due_mix(app_conn)
    holder = connect()
    gate = PausePoint(app_conn, holder, "BEFORE", pauses=2)
    paused_tick = connect(application_name=PAUSED_APPLICATION_NAME)
    other_tick = connect()

    with ThreadPoolExecutor(max_workers=1) as pool:
        paused_result = pool.submit(tick, paused_tick, T0)
        for step in range(1, pause):
            gate.wait_paused(backend_pid(paused_tick), step)
            gate.release(step)
        gate.wait_paused(backend_pid(paused_tick), pause)
        other_counts = tick(other_tick, T0)
        gate.release_all()
        paused_counts = paused_result.result(timeout=30)

    # Paused before its opening pass, the paused call has already completed
    # (and still locks) the rows due to complete, which the other call skips.
    assert other_counts == ((30, 30) if pause == 1 else (30, 0))
    assert paused_counts == ((0, 0) if pause == 1 else (0, 30))
    assert sum(other_counts) + sum(paused_counts) == due
    _assert_each_due_row_changed_once(app_conn)


# -- many app transactions locking rows in random order ---------------------------------------------


def test_random_app_locks_never_deadlock(
    app_conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    app_threads = 5
    rows_per_thread = 24
    transactions_per_thread = 40
    tick_threads = 2
    last_minute = 150

    install_history(app_conn)
    rng = random.Random(20260601)
    layout: dict[int, tuple[datetime, datetime]] = {}
    for _ in range(app_threads * rows_per_thread):
        starts_at = T0 + rng.randrange(0, last_minute + 30) * MINUTE
        ends_at = starts_at + rng.randrange(1, 60) * MINUTE
        layout[insert_session(app_conn, starts_at, ends_at)] = (starts_at, ends_at)
    ids = sorted(layout)
    # Each app thread owns its own rows, so app transactions cannot deadlock
    # each other; only a tick could close a cycle.
    owned = [ids[i::app_threads] for i in range(app_threads)]

    cancelled: set[int] = set()
    cancelled_lock = threading.Lock()
    minute = iter(range(last_minute + 1))
    minute_lock = threading.Lock()
    apps_done = threading.Event()

    def run_app(thread_no: int) -> int:
        thread_rng = random.Random(thread_no)
        conn = connect(autocommit=False)
        for _ in range(transactions_per_thread):
            chosen = thread_rng.sample(owned[thread_no], thread_rng.randint(2, 6))
            to_cancel = None
            for session_id in chosen:
                row = conn.execute("SELECT status FROM sessions WHERE id = %s FOR UPDATE", (session_id,)).fetchone()
                assert row is not None
                if row[0] in ("scheduled", "open", "full") and thread_rng.random() < 0.05:
                    to_cancel = session_id
            conn.execute("SELECT pg_sleep(%s)", (thread_rng.random() / 200,))
            if to_cancel is not None:
                conn.execute("UPDATE sessions SET status = 'cancelled' WHERE id = %s", (to_cancel,))
            conn.commit()
            if to_cancel is not None:
                with cancelled_lock:
                    cancelled.add(to_cancel)
        return transactions_per_thread

    def run_ticks() -> int:
        conn = connect(application_name="tick")
        calls = 0
        while True:
            with minute_lock:
                step = next(minute, None)
            if step is None:
                if apps_done.is_set():
                    return calls
                step = last_minute
            tick(conn, T0 + step * MINUTE)
            calls += 1

    with ThreadPoolExecutor(max_workers=app_threads + tick_threads) as pool:
        ticks: list[Future[int]] = [pool.submit(run_ticks) for _ in range(tick_threads)]
        apps = [pool.submit(run_app, n) for n in range(app_threads)]
        app_errors = [future.exception(timeout=120) for future in apps]
        apps_done.set()
        tick_errors = [future.exception(timeout=120) for future in ticks]

    assert not any(isinstance(error, psycopg.errors.DeadlockDetected) for error in app_errors + tick_errors)
    assert app_errors == [None] * app_threads
    assert tick_errors == [None] * tick_threads

    final_as_of = T0 + last_minute * MINUTE
    tick(app_conn, final_as_of)
    final = statuses(app_conn)
    for session_id, (starts_at, ends_at) in layout.items():
        if session_id in cancelled:
            assert final[session_id] == "cancelled"
        else:
            assert final[session_id] == expected_status(starts_at, ends_at, final_as_of), session_id
    for _session_id, old, new, _txid, application in history(app_conn):
        if application == "tick":
            assert (old, new) in {("scheduled", "open"), ("scheduled", "completed"), ("open", "completed")}
        else:
            assert new == "cancelled"


def test_ended_session_never_opened(app_conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]) -> None:
    # The app holds an ended, still scheduled session during the completing
    # pass and lets it go before the opening pass. The opening pass must not
    # open a session whose end has passed; the next call completes it.
    install_history(app_conn)
    holder = connect()
    gate = PausePoint(app_conn, holder, "BEFORE", pauses=2)
    ended = insert_session(app_conn, T0 - 2 * HOUR, T0 - HOUR)
    paused_tick = connect(application_name=PAUSED_APPLICATION_NAME)
    app = connect(autocommit=False)
    app.execute("SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", (ended,))

    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(tick, paused_tick, T0)
        gate.wait_paused(backend_pid(paused_tick), 1)
        gate.release(1)
        gate.wait_paused(backend_pid(paused_tick), 2)
        app.rollback()
        gate.release(2)
        counts = result.result(timeout=30)

    assert counts == (0, 0)
    assert status_of(app_conn, ended) == "scheduled"
    assert tick(app_conn, T0) == (0, 1)
    assert status_of(app_conn, ended) == "completed"
    assert [(entry[1], entry[2]) for entry in history(app_conn)] == [("scheduled", "completed")]


def test_rechecked_row_stays_locked_until_commit(
    app_conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> None:
    # A row that another transaction changed after the tick's snapshot is
    # locked by the tick to recheck it. When it no longer qualifies the tick
    # leaves it unchanged but keeps that lock until its transaction ends, as
    # PostgreSQL keeps every row lock: such rows are the only ones a tick
    # locks beyond the rows it changes.
    holder = connect()
    gate = PausePoint(app_conn, holder, "BEFORE", pauses=2)
    changed = insert_session(app_conn, T0 - HOUR, T0 + HOUR)
    control = insert_session(app_conn, T0 - HOUR, T0 + HOUR)
    untouched = insert_session(app_conn, T0 + HOUR, T0 + 2 * HOUR)
    paused_tick = connect(autocommit=False, application_name=PAUSED_APPLICATION_NAME)
    app = connect()

    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(tick, paused_tick, T0)
        gate.wait_paused(backend_pid(paused_tick), 1)
        gate.release(1)
        gate.wait_paused(backend_pid(paused_tick), 2)
        app.execute("UPDATE sessions SET status = 'full' WHERE id = %s", (changed,))
        gate.release(2)
        counts = result.result(timeout=30)

    assert counts == (1, 0)
    assert locked_row_count(holder, [control]) == 1
    assert locked_row_count(holder, [changed]) == 1
    assert locked_row_count(holder, [untouched]) == 0
    paused_tick.commit()
    assert locked_row_count(holder, [changed, control]) == 0
    assert status_of(app_conn, changed) == "full"


def test_pause_point_follows_snapshot(app_conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]) -> None:
    # Control for the recheck tests: an UPDATE that filters on status only
    # in a subquery, without FOR UPDATE, overwrites the app's committed
    # 'full' when paused at the same point. So the pause point does fall
    # between the statement's snapshot and its row locks, and the real tick
    # keeps 'full' only because it rechecks the locked row.
    app_conn.execute(
        "CREATE FUNCTION open_without_recheck(as_of timestamptz) RETURNS void LANGUAGE sql AS $$ "
        "UPDATE sessions SET status = 'open' "
        "WHERE id IN (SELECT id FROM sessions WHERE status = 'scheduled' AND starts_at <= as_of) $$"
    )
    holder = connect()
    gate = PausePoint(app_conn, holder, "BEFORE", pauses=1)
    session = insert_session(app_conn, T0 - HOUR, T0 + HOUR)
    paused = connect(application_name=PAUSED_APPLICATION_NAME)
    app = connect()

    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(paused.execute, "SELECT open_without_recheck(%s)", (T0,))
        gate.wait_paused(backend_pid(paused), 1)
        app.execute("UPDATE sessions SET status = 'full' WHERE id = %s", (session,))
        gate.release_all()
        result.result(timeout=30)

    assert status_of(app_conn, session) == "open"


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
def test_stricter_isolation_raises_serialization_failure(
    app_conn: psycopg.Connection, connect: Callable[..., psycopg.Connection], isolation: str
) -> None:
    # Under REPEATABLE READ or SERIALIZABLE (for example with
    # default_transaction_isolation set on the database or role)
    # PostgreSQL does not recheck a row changed after the snapshot: the call
    # fails with serialization_failure, changes nothing, and a retry succeeds.
    holder = connect()
    gate = PausePoint(app_conn, holder, "BEFORE", pauses=2)
    changed = insert_session(app_conn, T0 - HOUR, T0 + HOUR)
    other = insert_session(app_conn, T0 - HOUR, T0 + HOUR)
    paused_tick = connect(application_name=PAUSED_APPLICATION_NAME)
    paused_tick.execute(f"SET default_transaction_isolation = '{isolation}'")
    app = connect()

    with ThreadPoolExecutor(max_workers=1) as pool:
        result = pool.submit(tick, paused_tick, T0)
        gate.wait_paused(backend_pid(paused_tick), 1)
        gate.release(1)
        gate.wait_paused(backend_pid(paused_tick), 2)
        app.execute("UPDATE sessions SET status = 'full' WHERE id = %s", (changed,))
        gate.release_all()
        with pytest.raises(psycopg.errors.SerializationFailure):
            result.result(timeout=30)

    assert status_of(app_conn, changed) == "full"
    assert status_of(app_conn, other) == "scheduled"
    assert tick(paused_tick, T0) == (1, 0)
    assert status_of(app_conn, other) == "open"
