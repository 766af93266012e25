"""session_status.listener: LISTEN plus catch-up from the transition history."""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from session_status.listener import Listener, Transition
from session_status.sandbox import Sandbox
from tests import helpers
from tests.test_tick import insert_session, tick

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
# Generous upper bound for a delivery that normally takes milliseconds.
DELIVERY_TIMEOUT = 30.0


def history_ids(conn: psycopg.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT id FROM session_status_transitions ORDER BY id")]


def test_listener_receives_tick_from_other_connection(sandbox: Sandbox, head_database: str) -> None:
    received: queue.Queue[Transition] = queue.Queue()
    listener = Listener(sandbox.conninfo(head_database))

    def consume() -> None:
        for transition in listener.transitions(idle_timeout=DELIVERY_TIMEOUT):
            received.put(transition)
            if received.qsize() == 2:
                return

    with sandbox.connect(head_database) as writer:
        opening = insert_session(writer, T0 - MINUTE, T0 + HOUR)
        completing = insert_session(writer, T0 - 2 * HOUR, T0 - HOUR, "open")
        # Connect before the tick so the listener starts after the current newest id.
        listener.connect()
        thread = threading.Thread(target=consume)
        thread.start()
        tick(writer, T0)
        thread.join(DELIVERY_TIMEOUT + 5)
    listener.close()

    first = received.get_nowait()
    second = received.get_nowait()
    assert (first.session_id, first.from_status, first.to_status) == (completing, "open", "completed")
    assert (second.session_id, second.from_status, second.to_status) == (opening, "scheduled", "open")
    assert first.due_at == T0 - HOUR
    assert second.as_of == T0
    assert listener.last_id == second.id


def test_listener_default_skips_existing_history(sandbox: Sandbox, head_database: str) -> None:
    with sandbox.connect(head_database) as writer:
        insert_session(writer, T0 - MINUTE, T0 + HOUR)
        tick(writer, T0)

        with Listener(sandbox.conninfo(head_database)) as listener:
            assert list(listener.transitions(catch_up_only=True)) == []
            assert listener.last_id == history_ids(writer)[-1]


def test_listener_after_id_catches_up_in_order(sandbox: Sandbox, head_database: str) -> None:
    with sandbox.connect(head_database) as writer:
        for offset in range(7):
            insert_session(writer, T0 - HOUR + offset * MINUTE, T0 + HOUR)
        tick(writer, T0)
        ids = history_ids(writer)

        with Listener(sandbox.conninfo(head_database), after_id=ids[2], batch_size=2) as listener:
            delivered = [t.id for t in listener.transitions(catch_up_only=True)]

    assert delivered == ids[3:]


def test_listener_delivers_missed_after_reconnect(
    sandbox: Sandbox, head_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    listener = Listener(sandbox.conninfo(head_database), after_id=0, reconnect_delay=0.05)
    with sandbox.connect(head_database) as writer, listener:
        for offset in range(3):
            insert_session(writer, T0 - HOUR + offset * MINUTE, T0 + HOUR)
        for offset in range(4):
            insert_session(writer, T0 + HOUR + offset * MINUTE, T0 + 2 * HOUR + offset * MINUTE)
        tick(writer, T0)
        stream = listener.transitions(idle_timeout=DELIVERY_TIMEOUT)
        delivered = [next(stream).id for _ in range(3)]

        pid = listener.backend_pid
        assert pid is not None
        writer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # Committed while the listener has no connection: no notification reaches it.
        tick(writer, T0 + 90 * MINUTE)
        tick(writer, T0 + 3 * HOUR)

        with caplog.at_level(logging.WARNING, logger="session_status.listener"):
            delivered += [next(stream).id for _ in range(11)]
        stream.close()

        assert delivered == history_ids(writer)
    assert len(delivered) == len(set(delivered)) == 14
    assert listener.reconnects == 1
    assert any("lost the connection" in record.getMessage() for record in caplog.records)


def test_listener_run_counts_callbacks(sandbox: Sandbox, head_database: str) -> None:
    seen: list[int] = []
    with sandbox.connect(head_database) as writer:
        for offset in range(3):
            insert_session(writer, T0 - HOUR + offset * MINUTE, T0 + HOUR)
        tick(writer, T0)

        with Listener(sandbox.conninfo(head_database), after_id=0) as listener:
            count = listener.run(lambda t: seen.append(t.session_id), catch_up_only=True)

    assert count == 3
    assert len(seen) == 3


def test_listener_rejects_invalid_schema() -> None:
    with pytest.raises(Exception, match="invalid schema"):
        Listener("postgresql://127.0.0.1/none", schema="bad name")


def test_listener_missing_table_raises(sandbox: Sandbox, migrated_database: str) -> None:
    with Listener(sandbox.conninfo(migrated_database)) as listener, pytest.raises(psycopg.errors.UndefinedTable):
        list(listener.transitions(catch_up_only=True))


def test_listener_survives_server_restart(caplog: pytest.LogCaptureFixture) -> None:
    with Sandbox(cron_database="postgres") as server:
        server.create_database("app")
        helpers.upgrade(server.url("app"), "head", schedule="0 0 1 1 *")
        with server.connect("app") as writer:
            insert_session(writer, T0 - HOUR, T0 + HOUR)
            insert_session(writer, T0 + HOUR, T0 + 2 * HOUR)
            tick(writer, T0)
        listener = Listener(server.conninfo("app"), after_id=0, reconnect_delay=0.05, max_reconnect_delay=0.5)
        with listener:
            stream = listener.transitions(idle_timeout=DELIVERY_TIMEOUT)
            first = next(stream)

            rest: list[int] = []
            server.stop_server()
            # The listener retries while the server is down, then catches up.
            with caplog.at_level(logging.WARNING, logger="session_status.listener"):
                consumer = threading.Thread(target=lambda: rest.extend(next(stream).id for _ in range(2)))
                consumer.start()
                time.sleep(0.5)
                server.restart()
                with server.connect("app") as writer:
                    tick(writer, T0 + 90 * MINUTE)
                    ids = history_ids(writer)
                consumer.join(DELIVERY_TIMEOUT + 5)
            stream.close()

    assert [first.id, *rest] == ids
    assert listener.reconnects >= 1


def test_listener_warns_when_rls_hides_history(
    sandbox: Sandbox, head_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    with sandbox.connect(head_database) as conn:
        conn.execute("CREATE ROLE history_reader LOGIN")
        conn.execute("GRANT SELECT ON session_status_transitions TO history_reader")
    try:
        listener = Listener(sandbox.conninfo(head_database, user="history_reader"), after_id=0)
        with caplog.at_level(logging.WARNING, logger="session_status.listener"), listener:
            listener.connect()
        assert "role 'history_reader' is not its owner and has no policy on it" in caplog.text

        with sandbox.connect(head_database) as conn:
            conn.execute(
                "CREATE POLICY reader_reads ON session_status_transitions FOR SELECT TO history_reader USING (true)"
            )
        caplog.clear()
        with (
            caplog.at_level(logging.WARNING, logger="session_status.listener"),
            Listener(sandbox.conninfo(head_database, user="history_reader"), after_id=0) as listener_with_policy,
        ):
            listener_with_policy.connect()
        assert "no transition will be delivered" not in caplog.text
    finally:
        with sandbox.connect(head_database) as conn:
            conn.execute("DROP POLICY IF EXISTS reader_reads ON session_status_transitions")
            conn.execute("REVOKE ALL ON session_status_transitions FROM history_reader")
            conn.execute("DROP ROLE history_reader")
