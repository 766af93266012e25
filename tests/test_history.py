"""Transition history, notifications and the effective-status view of revision 0005."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from session_status.sandbox import Sandbox
from tests import helpers
from tests.test_tick import insert_session, status_of, tick

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
CHANNEL = "session_status"


def history(conn: psycopg.Connection) -> list[tuple[int, str, str, datetime, datetime]]:
    rows = conn.execute(
        "SELECT session_id, from_status, to_status, due_at, as_of FROM session_status_transitions ORDER BY id"
    ).fetchall()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def payloads(conn: psycopg.Connection) -> list[dict[str, object]]:
    """Return the JSON payloads of the notifications already delivered to ``conn``."""
    return [json.loads(n.payload) for n in conn.notifies(timeout=0.5) if n.channel == CHANNEL]


def test_history_records_each_transition(head_conn: psycopg.Connection) -> None:
    missed = insert_session(head_conn, T0 - 3 * HOUR, T0 - 2 * HOUR)
    full = insert_session(head_conn, T0 - 2 * HOUR, T0 - HOUR, "full")
    starting = insert_session(head_conn, T0 - MINUTE, T0 + HOUR)
    insert_session(head_conn, T0 - HOUR, T0 + HOUR, "cancelled")
    insert_session(head_conn, T0 + HOUR, T0 + 2 * HOUR)

    assert tick(head_conn, T0) == (1, 2)

    assert history(head_conn) == [
        (missed, "scheduled", "completed", T0 - 2 * HOUR, T0),
        (full, "full", "completed", T0 - HOUR, T0),
        (starting, "scheduled", "open", T0 - MINUTE, T0),
    ]


def test_history_applied_at_is_transaction_time(head_conn: psycopg.Connection) -> None:
    insert_session(head_conn, T0, T0 + HOUR)

    with head_conn.transaction():
        now = head_conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        tick(head_conn, T0)

    applied = head_conn.execute("SELECT applied_at FROM session_status_transitions").fetchall()
    assert applied == [(now,)]


def test_history_matches_stored_statuses(head_conn: psycopg.Connection) -> None:
    for offset in range(6):
        insert_session(head_conn, T0 - offset * 20 * MINUTE, T0 + HOUR - offset * 20 * MINUTE)

    tick(head_conn, T0 + 30 * MINUTE)
    tick(head_conn, T0 + 90 * MINUTE)

    last = head_conn.execute(
        "SELECT DISTINCT ON (session_id) session_id, to_status FROM session_status_transitions "
        "ORDER BY session_id, id DESC"
    ).fetchall()
    stored = head_conn.execute("SELECT id, status FROM sessions WHERE status <> 'scheduled' ORDER BY id").fetchall()
    assert last == stored


def test_history_respects_max_transitions(head_conn: psycopg.Connection) -> None:
    for offset in range(3):
        insert_session(head_conn, T0 - 2 * HOUR, T0 - HOUR + offset * MINUTE)
    for offset in range(2):
        insert_session(head_conn, T0 - HOUR + offset * MINUTE, T0 + HOUR)

    head_conn.execute("SELECT advance_session_statuses(%s, 4)", (T0,))
    assert [row[2] for row in history(head_conn)] == ["completed"] * 3 + ["open"]

    head_conn.execute("SELECT advance_session_statuses(%s, 4)", (T0,))
    assert [row[2] for row in history(head_conn)] == ["completed"] * 3 + ["open"] * 2


def test_notify_once_per_call_after_commit(sandbox: Sandbox, head_database: str) -> None:
    with sandbox.connect(head_database) as writer, sandbox.connect(head_database) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        for offset in range(5):
            insert_session(writer, T0 - HOUR + offset * MINUTE, T0 + HOUR)

        with writer.transaction():
            tick(writer, T0)
            assert payloads(listener) == []

        ids = [row[0] for row in listener.execute("SELECT id FROM session_status_transitions ORDER BY id")]
        assert payloads(listener) == [{"schema": "public", "first_id": ids[0], "last_id": ids[-1], "count": 5}]


def test_notify_nothing_when_nothing_changes(sandbox: Sandbox, head_database: str) -> None:
    with sandbox.connect(head_database) as writer, sandbox.connect(head_database) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        insert_session(writer, T0 + HOUR, T0 + 2 * HOUR)

        assert tick(writer, T0) == (0, 0)

        assert payloads(listener) == []


def test_rollback_drops_history_and_notify(sandbox: Sandbox, head_database: str) -> None:
    with sandbox.connect(head_database) as writer, sandbox.connect(head_database) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        session = insert_session(writer, T0 - HOUR, T0 + HOUR)

        writer.execute("BEGIN")
        tick(writer, T0)
        writer.execute("ROLLBACK")

        assert payloads(listener) == []
        assert history(writer) == []
        assert status_of(writer, session) == "scheduled"


def test_large_batch_sends_one_short_payload(sandbox: Sandbox, head_database: str) -> None:
    with sandbox.connect(head_database) as writer, sandbox.connect(head_database) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        writer.execute(
            "INSERT INTO sessions (starts_at, ends_at) "
            "SELECT %s - i * interval '1 second', %s + interval '1 hour' FROM generate_series(1, 3000) AS i",
            (T0, T0),
        )

        assert tick(writer, T0) == (3000, 0)

        notifications = [n for n in listener.notifies(timeout=0.5)]
        assert len(notifications) == 1
        assert len(notifications[0].payload.encode()) < 200
        assert json.loads(notifications[0].payload)["count"] == 3000


def test_batching_procedure_notifies_per_batch(sandbox: Sandbox, head_database: str) -> None:
    with sandbox.connect(head_database) as writer, sandbox.connect(head_database) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        for offset in range(5):
            insert_session(writer, T0 - HOUR + offset * MINUTE, T0 + HOUR)

        writer.execute("CALL advance_session_statuses_in_batches(%s, 2)", (T0,))

        received = payloads(listener)
        assert [p["count"] for p in received] == [2, 2, 1]
        ids = [row[0] for row in writer.execute("SELECT id FROM session_status_transitions ORDER BY id")]
        assert [(p["first_id"], p["last_id"]) for p in received] == [
            (ids[0], ids[1]),
            (ids[2], ids[3]),
            (ids[4], ids[4]),
        ]


def test_concurrent_tick_waits_for_first(sandbox: Sandbox, head_database: str) -> None:
    # Ids must become visible in increasing order, so a second tick may not
    # insert history while the first one's transaction is open.
    with sandbox.connect(head_database) as first, sandbox.connect(head_database) as second:
        insert_session(first, T0 - HOUR, T0 + HOUR)
        first.execute("BEGIN")
        tick(first, T0)

        second.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            second.execute("SELECT advance_session_statuses(%s)", (T0,))

        first.execute("COMMIT")
        assert tick(second, T0) == (0, 0)


def test_history_table_is_commented(head_conn: psycopg.Connection) -> None:
    comment = head_conn.execute("SELECT obj_description('session_status_transitions'::regclass, 'pg_class')").fetchone()
    assert comment is not None
    assert str(comment[0]).startswith("session-status:")


def test_function_keeps_its_properties(head_conn: psycopg.Connection) -> None:
    row = head_conn.execute(
        "SELECT prosecdef, proconfig, "
        "       (SELECT count(*) FROM aclexplode(proacl) WHERE grantee = 0), "
        "       pg_get_function_identity_arguments(oid), "
        "pg_get_function_result(oid) FROM pg_proc WHERE proname = 'advance_session_statuses'"
    ).fetchone()
    assert row is not None
    security_definer, config, public_grants, arguments, result = row
    assert security_definer is False
    assert config == ["search_path=pg_catalog, pg_temp"]
    assert public_grants == 0
    assert arguments == (
        "as_of timestamp with time zone, max_transitions integer, OUT opened bigint, OUT completed bigint"
    )
    assert result == "record"


# -- sessions_effective_status ---------------------------------------------------


def test_effective_status_runs_ahead_of_tick(head_conn: psycopg.Connection) -> None:
    now = head_conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    started = insert_session(head_conn, now - HOUR, now + HOUR)
    ended = insert_session(head_conn, now - 2 * HOUR, now - HOUR, "open")
    missed = insert_session(head_conn, now - 3 * HOUR, now - 2 * HOUR)
    full_ended = insert_session(head_conn, now - 2 * HOUR, now - HOUR, "full")
    full_running = insert_session(head_conn, now - HOUR, now + HOUR, "full")
    cancelled = insert_session(head_conn, now - 2 * HOUR, now - HOUR, "cancelled")
    future = insert_session(head_conn, now + HOUR, now + 2 * HOUR)

    rows = dict(head_conn.execute("SELECT id, status FROM sessions_effective_status").fetchall())

    assert rows == {
        started: "open",
        ended: "completed",
        missed: "completed",
        full_ended: "completed",
        full_running: "full",
        cancelled: "cancelled",
        future: "scheduled",
    }
    assert status_of(head_conn, started) == "scheduled"


def test_effective_status_equals_stored_after_tick(head_conn: psycopg.Connection) -> None:
    now = head_conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    for offset in range(-4, 5):
        insert_session(head_conn, now + offset * 30 * MINUTE, now + offset * 30 * MINUTE + HOUR)
    insert_session(head_conn, now - HOUR, now + HOUR, "full")

    with head_conn.transaction():
        before = head_conn.execute(
            "SELECT count(*) FROM sessions_effective_status WHERE status <> stored_status"
        ).fetchone()
        head_conn.execute("SELECT advance_session_statuses()")
        after = head_conn.execute(
            "SELECT id, status, stored_status FROM sessions_effective_status WHERE status <> stored_status"
        ).fetchall()

    assert before is not None
    assert before[0] > 0
    assert after == []


def test_effective_status_honours_row_level_security(sandbox: Sandbox, head_database: str) -> None:
    with sandbox.connect(head_database) as owner:
        insert_session(owner, T0, T0 + HOUR)
        owner.execute("CREATE ROLE effective_reader")
        try:
            owner.execute("GRANT USAGE ON SCHEMA public TO effective_reader")
            owner.execute("GRANT SELECT ON sessions, sessions_effective_status TO effective_reader")
            owner.execute("SET ROLE effective_reader")
            visible = owner.execute("SELECT count(*) FROM sessions_effective_status").fetchone()
            owner.execute("RESET ROLE")
        finally:
            owner.execute("REVOKE ALL ON sessions, sessions_effective_status FROM effective_reader")
            owner.execute("REVOKE ALL ON SCHEMA public FROM effective_reader")
            owner.execute("DROP ROLE effective_reader")
    assert visible == (0,)


# -- up and down -------------------------------------------------------------------


def test_downgrade_restores_0003_function(sandbox: Sandbox, database: str) -> None:
    url = sandbox.url(database)
    helpers.upgrade(url, "session_status_0004", schedule="0 0 1 1 *")
    with sandbox.connect(database) as conn:
        definition = conn.execute("SELECT pg_get_functiondef('advance_session_statuses'::regproc)").fetchone()
        comment = conn.execute("SELECT obj_description('advance_session_statuses'::regproc, 'pg_proc')").fetchone()
        snapshot = helpers.catalog_snapshot(conn)

    helpers.upgrade(url, "session_status_0005")
    helpers.downgrade(url, "session_status_0004")

    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT pg_get_functiondef('advance_session_statuses'::regproc)").fetchone() == definition
        assert (
            conn.execute("SELECT obj_description('advance_session_statuses'::regproc, 'pg_proc')").fetchone() == comment
        )
        assert helpers.catalog_snapshot(conn) == snapshot


def test_downgrade_finds_configured_schema(sandbox: Sandbox, database: str) -> None:
    url = sandbox.url(database)
    helpers.upgrade(url, "session_status_0005", schema="app_events", schedule="0 0 1 1 *")
    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('app_events.session_status_transitions')").fetchone() != (None,)

    # The downgrade reads no schema setting: it finds the table by its comment.
    helpers.downgrade(url, "session_status_0004")

    with sandbox.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('app_events.session_status_transitions')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass('app_events.sessions_effective_status')").fetchone() == (None,)
        definition = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = 'advance_session_statuses'").fetchone()
        assert definition is not None
        assert "session_status_transitions" not in definition[0]
