"""One instant per call: now() of the transaction, an explicit as_of, one as_of for all batches."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg
import pytest

from tests.tick_helpers import (
    PAUSED_APPLICATION_NAME,
    PausePoint,
    backend_pid,
    insert_session,
    status_of,
    tick,
)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def test_call_judges_at_transaction_start(app_conn: psycopg.Connection) -> None:
    with app_conn.transaction():
        started = app_conn.execute("SELECT now()").fetchone()[0]
        session = insert_session(app_conn, started + timedelta(milliseconds=300), started + HOUR)
        app_conn.execute("SELECT pg_sleep(0.5)")
        wall_clock = app_conn.execute("SELECT clock_timestamp()").fetchone()[0]
        assert wall_clock > started + timedelta(milliseconds=300)

        # The session started on the wall clock, but not at now().
        assert tick(app_conn) == (0, 0)
        assert status_of(app_conn, session) == "scheduled"

    assert tick(app_conn) == (1, 0)
    assert status_of(app_conn, session) == "open"


def test_explicit_as_of_used_as_given(app_conn: psycopg.Connection) -> None:
    now = app_conn.execute("SELECT now()").fetchone()[0]
    running = insert_session(app_conn, now - HOUR, now + 2 * HOUR)

    assert tick(app_conn, now - DAY) == (0, 0)
    assert status_of(app_conn, running) == "scheduled"
    assert tick(app_conn, now + DAY) == (0, 1)
    assert status_of(app_conn, running) == "completed"


def test_procedure_takes_as_of_once(app_conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]) -> None:
    # Twelve sessions due now and a batch size of 5 make three transactions.
    # The test inserts a session that starts after the first transaction
    # began and before the later ones began. It stays scheduled, because
    # every batch judges at the instant taken when the CALL started.
    now = app_conn.execute("SELECT now()").fetchone()[0]
    for minutes in range(12):
        insert_session(app_conn, now - HOUR - timedelta(minutes=minutes), now + HOUR)
    holder = connect()
    gate = PausePoint(app_conn, holder, "AFTER", pauses=10)
    tick_conn = connect(application_name=PAUSED_APPLICATION_NAME)
    app = connect()

    with ThreadPoolExecutor(max_workers=1) as pool:
        call = pool.submit(tick_conn.execute, "CALL advance_session_statuses_in_batches(NULL, 5)")
        gate.wait_paused(backend_pid(tick_conn), 1)
        late_start = app.execute("SELECT clock_timestamp()").fetchone()[0]
        late = insert_session(app, late_start, late_start + HOUR)
        gate.release_all()
        call.result(timeout=30)

    batch_instants = [
        row[0]
        for row in app_conn.execute(
            "SELECT DISTINCT status_changed_at FROM sessions WHERE status = 'open' ORDER BY 1"
        ).fetchall()
    ]
    assert len(batch_instants) == 3
    assert batch_instants[0] < late_start < batch_instants[1]
    assert status_of(app_conn, late) == "scheduled"
    assert app_conn.execute("SELECT count(*) FROM sessions WHERE status = 'open'").fetchone() == (12,)


def test_procedure_inside_transaction_block_fails(app_conn: psycopg.Connection) -> None:
    now = app_conn.execute("SELECT now()").fetchone()[0]
    session = insert_session(app_conn, now - HOUR, now + HOUR)

    with pytest.raises(psycopg.errors.InvalidTransactionTermination):
        with app_conn.transaction():
            app_conn.execute("CALL advance_session_statuses_in_batches(NULL, 5)")

    assert status_of(app_conn, session) == "scheduled"
