"""Tools for the tick tests: rows, calls, a status history and a pause point inside the tick.

The history and the pause point are triggers that only the tests install on
the sessions table; the product has neither.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import Future
from datetime import datetime
from typing import Any

import psycopg

# Connections with this application_name stop at the pause point; every
# other writer (the app connections of a test) passes through it.
PAUSED_APPLICATION_NAME = "paused-tick"
# First key of the two-key advisory locks that the pause point waits on. The
# second key is the pause number, 1 for the first statement that reaches it.
PAUSE_LOCK_CLASS = 7301

HISTORY_DDL = """
CREATE TABLE status_history (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id   bigint NOT NULL,
    old_status   text NOT NULL,
    new_status   text NOT NULL,
    txid         bigint NOT NULL,
    application  text NOT NULL
);
CREATE FUNCTION record_status_change() RETURNS trigger LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    INSERT INTO status_history (session_id, old_status, new_status, txid, application)
    VALUES (NEW.id, OLD.status, NEW.status, txid_current(), current_setting('application_name'));
    RETURN NULL;
END
$$;
CREATE TRIGGER record_status_change AFTER UPDATE ON sessions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION record_status_change();
"""

PAUSE_FUNCTION_DDL = f"""
CREATE FUNCTION pause_point() RETURNS trigger LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_step integer;
BEGIN
    IF current_setting('application_name') = '{PAUSED_APPLICATION_NAME}' THEN
        v_step := coalesce(nullif(current_setting('tick_test.pause_step', true), ''), '0')::integer + 1;
        PERFORM set_config('tick_test.pause_step', v_step::text, false);
        PERFORM pg_advisory_lock({PAUSE_LOCK_CLASS}, v_step);
        PERFORM pg_advisory_unlock({PAUSE_LOCK_CLASS}, v_step);
    END IF;
    RETURN NULL;
END
$$;
"""


def insert_session(
    conn: psycopg.Connection,
    starts_at: datetime,
    ends_at: datetime,
    status: str = "scheduled",
    capacity: int | None = None,
) -> int:
    row = conn.execute(
        "INSERT INTO sessions (starts_at, ends_at, status, capacity) VALUES (%s, %s, %s, %s) RETURNING id",
        (starts_at, ends_at, status, capacity),
    ).fetchone()
    assert row is not None
    return int(row[0])


def status_of(conn: psycopg.Connection, session_id: int) -> str:
    row = conn.execute("SELECT status FROM sessions WHERE id = %s", (session_id,)).fetchone()
    assert row is not None, f"session {session_id} not found"
    return str(row[0])


def statuses(conn: psycopg.Connection) -> dict[int, str]:
    return {int(i): str(s) for i, s in conn.execute("SELECT id, status FROM sessions ORDER BY id")}


def tick(
    conn: psycopg.Connection, as_of: datetime | None = None, max_transitions: int | None = None
) -> tuple[int, int]:
    if as_of is None:
        row = conn.execute("SELECT opened, completed FROM advance_session_statuses()").fetchone()
    else:
        row = conn.execute(
            "SELECT opened, completed FROM advance_session_statuses(%s, %s)", (as_of, max_transitions)
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def expected_status(starts_at: datetime, ends_at: datetime, as_of: datetime) -> str:
    """Return the status the clock gives an untouched session at ``as_of``."""
    if ends_at <= as_of:
        return "completed"
    if starts_at <= as_of:
        return "open"
    return "scheduled"


def install_history(conn: psycopg.Connection) -> None:
    """Record every status change with its transaction id into status_history."""
    conn.execute(HISTORY_DDL)


def history(conn: psycopg.Connection) -> list[tuple[int, str, str, int, str]]:
    rows = conn.execute(
        "SELECT session_id, old_status, new_status, txid, application FROM status_history ORDER BY seq"
    ).fetchall()
    return [(int(a), str(b), str(c), int(d), str(e)) for a, b, c, d, e in rows]


class PausePoint:
    """A statement trigger on sessions that holds a paused tick until the test lets it go.

    ``when`` is ``"BEFORE"`` (the statement has its snapshot but has not yet
    read or locked a row) or ``"AFTER"`` (the statement has updated and still
    holds its rows). Only connections whose application_name is
    :data:`PAUSED_APPLICATION_NAME` stop; they stop at every UPDATE
    statement on sessions, numbered from 1 per connection. The holder
    connection takes the advisory lock of every pause number up front, so
    the order of events never depends on timing.
    """

    def __init__(self, conn: psycopg.Connection, holder: psycopg.Connection, when: str, pauses: int) -> None:
        assert when in ("BEFORE", "AFTER")
        self.conn = conn
        self.holder = holder
        self.pauses = pauses
        self.released: set[int] = set()
        conn.execute(PAUSE_FUNCTION_DDL)
        conn.execute(
            f"CREATE TRIGGER pause_point {when} UPDATE ON sessions FOR EACH STATEMENT EXECUTE FUNCTION pause_point()"
        )
        for step in range(1, pauses + 1):
            holder.execute("SELECT pg_advisory_lock(%s, %s)", (PAUSE_LOCK_CLASS, step))

    def wait_paused(self, pid: int, step: int, timeout: float = 30.0, until: Future[Any] | None = None) -> bool:
        """Wait until backend ``pid`` waits at pause number ``step``.

        Returns False if ``until`` completes first (the paused call returned
        without reaching that pause); raises AssertionError after ``timeout``
        seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.holder.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = %s AND NOT granted "
                "AND classid = %s AND objid = %s AND objsubid = 2",
                (pid, PAUSE_LOCK_CLASS, step),
            ).fetchone()
            if row:
                return True
            if until is not None and until.done():
                return False
            time.sleep(0.01)
        raise AssertionError(f"backend {pid} did not reach pause {step} within {timeout} s")

    def release(self, step: int) -> None:
        self.holder.execute("SELECT pg_advisory_unlock(%s, %s)", (PAUSE_LOCK_CLASS, step))
        self.released.add(step)

    def release_all(self) -> None:
        for step in range(1, self.pauses + 1):
            if step not in self.released:
                self.release(step)


def backend_pid(conn: psycopg.Connection) -> int:
    return int(conn.info.backend_pid)


def locked_row_count(conn: psycopg.Connection, ids: Iterable[int] | None = None) -> int:
    """Return how many sessions rows another transaction holds locked right now.

    Locks every unlocked row with SKIP LOCKED in a transaction that is then
    rolled back, so the rows that it could not lock are the locked ones.
    """
    with conn.transaction(force_rollback=True):
        if ids is None:
            total = conn.execute("SELECT count(*) FROM sessions").fetchone()
            free = conn.execute("SELECT count(*) FROM (SELECT id FROM sessions FOR UPDATE SKIP LOCKED) AS f").fetchone()
        else:
            id_list = list(ids)
            total = (len(id_list),)
            free = conn.execute(
                "SELECT count(*) FROM (SELECT id FROM sessions WHERE id = ANY(%s) FOR UPDATE SKIP LOCKED) AS f",
                (id_list,),
            ).fetchone()
        assert total is not None
        assert free is not None
        return int(total[0]) - int(free[0])
