"""Faults while the tick runs: killed backends, crashes, failover, a dead launcher, held locks.

Tests that kill server processes or restart servers start their own
Sandbox, so the shared ``sandbox`` fixture and its pg_cron launcher are
never touched. Each scenario records every status change in an audit
table, so "applied exactly once" is checked row by row.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa

from session_status import health
from session_status.sandbox import Sandbox
from tests import helpers

APP_DATABASE = "app"
SESSIONS = 40
BATCH_SIZE = 10
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

# Test-only instrumentation: every status change is recorded, and with
# session_status_test.slow_tick = on each changed row takes 50 ms, so a
# batch of BATCH_SIZE rows is in flight for about half a second.
AUDIT_SQL = """
CREATE TABLE status_audit (
    session_id bigint NOT NULL,
    old_status text NOT NULL,
    new_status text NOT NULL
);
CREATE FUNCTION record_status_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_catalog.current_setting('session_status_test.slow_tick', true) = 'on' THEN
        PERFORM pg_catalog.pg_sleep(0.05);
    END IF;
    -- The tick pins search_path to pg_catalog, so the table is qualified.
    INSERT INTO public.status_audit VALUES (NEW.id, OLD.status, NEW.status);
    RETURN NEW;
END
$$;
CREATE TRIGGER record_status_change AFTER UPDATE OF status ON sessions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION record_status_change();
"""


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def connect_when_ready(server: Sandbox, dbname: str, timeout: float = 60) -> psycopg.Connection:
    """Connect once the server accepts connections again (after crash recovery, say)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return server.connect(dbname)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def install_audit(conn: psycopg.Connection) -> None:
    conn.execute(AUDIT_SQL)


def insert_open_sessions(conn: psycopg.Connection, count: int, ends_at: datetime) -> None:
    conn.execute(
        "INSERT INTO sessions (starts_at, ends_at, status) SELECT %s, %s, 'open' FROM generate_series(1, %s)",
        (ends_at - HOUR, ends_at, count),
    )


def insert_due_scheduled_sessions(conn: psycopg.Connection, count: int) -> None:
    """Insert sessions that started a minute ago and end in an hour: each is due to open."""
    conn.execute(
        "INSERT INTO sessions (starts_at, ends_at) "
        "SELECT now() - interval '1 minute', now() + interval '1 hour' FROM generate_series(1, %s)",
        (count,),
    )


def status_counts(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM sessions GROUP BY status").fetchall())


def audit_counts(conn: psycopg.Connection) -> list[tuple[int, str, str, int]]:
    """Return (session id, old status, new status, times) for every recorded change."""
    return conn.execute(
        "SELECT session_id, old_status, new_status, count(*) FROM status_audit "
        "GROUP BY session_id, old_status, new_status ORDER BY session_id, old_status"
    ).fetchall()


def assert_each_transition_once(conn: psycopg.Connection, old: str, new: str) -> None:
    sessions = [row[0] for row in conn.execute("SELECT id FROM sessions ORDER BY id")]
    expected = [(session_id, old, new, 1) for session_id in sessions]
    assert audit_counts(conn) == expected


def assert_batches_atomic(conn: psycopg.Connection) -> None:
    """Check that only whole batches committed and that every row agrees with the audit."""
    counts = status_counts(conn)
    completed = counts.get("completed", 0)
    assert set(counts) <= {"open", "completed"}
    assert completed % BATCH_SIZE == 0, f"{completed} completed rows: a batch was applied in part"
    assert completed < SESSIONS, "the tick finished before it was interrupted; the test proves nothing"
    audited = conn.execute("SELECT count(*) FROM status_audit").fetchone()
    assert audited == (completed,)
    mismatched = conn.execute(
        "SELECT count(*) FROM sessions s "
        "WHERE (s.status = 'completed') <> EXISTS (SELECT 1 FROM status_audit a WHERE a.session_id = s.id)"
    ).fetchone()
    assert mismatched == (0,)
    # status_changed_at moves with the status: it is older than the insert only for untouched rows.
    stale_stamps = conn.execute(
        "SELECT count(*) FROM sessions WHERE status = 'completed' AND status_changed_at = created_at"
    ).fetchone()
    assert stale_stamps == (0,)


class SlowTick:
    """Runs the batching procedure in a thread, slowed by the audit trigger, on its own connection."""

    def __init__(self, server: Sandbox, dbname: str) -> None:
        self.conn = server.connect(dbname)
        self.conn.execute("SET session_status_test.slow_tick = on")
        row = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        self.pid = int(row[0])
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.conn.execute(
                "CALL advance_session_statuses_in_batches(%s, batch_size => %s)", (T0 + 2 * HOUR, BATCH_SIZE)
            )
        except BaseException as error:
            self.error = error

    def start(self) -> SlowTick:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the interrupted tick did not return"
        self.conn.close()


def wait_until_mid_batch(conn: psycopg.Connection, tick: SlowTick) -> None:
    """Wait until the first batch has committed and the second is sleeping in the trigger."""

    def first_batch_committed_and_sleeping() -> bool:
        completed = status_counts(conn).get("completed", 0)
        row = conn.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (tick.pid,)).fetchone()
        return completed >= BATCH_SIZE and row is not None and row[0] == "PgSleep"

    wait_for(first_batch_committed_and_sleeping, timeout=30, what="the tick to commit one batch")


def finish_tick(conn: psycopg.Connection) -> None:
    conn.execute("CALL advance_session_statuses_in_batches(%s, batch_size => %s)", (T0 + 2 * HOUR, BATCH_SIZE))


# -- a backend running the tick is killed -------------------------------------------


@pytest.fixture
def audited_conn(sandbox: Sandbox, migrated_database: str) -> Iterator[psycopg.Connection]:
    with sandbox.connect(migrated_database) as conn:
        install_audit(conn)
        insert_open_sessions(conn, SESSIONS, T0 + HOUR)
        yield conn


def test_terminated_tick_keeps_whole_batches(
    sandbox: Sandbox, migrated_database: str, audited_conn: psycopg.Connection
) -> None:
    tick = SlowTick(sandbox, migrated_database).start()
    wait_until_mid_batch(audited_conn, tick)

    terminated = audited_conn.execute("SELECT pg_terminate_backend(%s)", (tick.pid,)).fetchone()
    assert terminated == (True,)
    tick.join()

    assert isinstance(tick.error, psycopg.OperationalError)
    assert "terminating connection due to administrator command" in str(tick.error)
    assert_batches_atomic(audited_conn)

    finish_tick(audited_conn)
    assert status_counts(audited_conn) == {"completed": SESSIONS}
    assert_each_transition_once(audited_conn, "open", "completed")


@pytest.fixture
def private_server() -> Iterator[Sandbox]:
    """A server of this test's own, with pg_cron's database as the app database."""
    with Sandbox(cron_database=APP_DATABASE) as server:
        server.create_database(APP_DATABASE)
        yield server


def test_killed_tick_backend_keeps_whole_batches(private_server: Sandbox) -> None:
    helpers.upgrade(private_server.url(APP_DATABASE), "session_status_0003")
    with private_server.connect(APP_DATABASE) as conn:
        install_audit(conn)
        insert_open_sessions(conn, SESSIONS, T0 + HOUR)
        tick = SlowTick(private_server, APP_DATABASE).start()
        wait_until_mid_batch(conn, tick)

        # SIGKILL of a backend makes the postmaster end every backend and
        # run crash recovery, so this connection goes down too.
        os.kill(tick.pid, signal.SIGKILL)
        tick.join()
    assert isinstance(tick.error, psycopg.OperationalError)

    with connect_when_ready(private_server, APP_DATABASE) as conn:
        assert_batches_atomic(conn)
        # The launcher is a background worker too; it must come back after the reset.
        wait_for(lambda: health.launcher_running(conn) is True, timeout=30, what="pg_cron's launcher after the reset")

        finish_tick(conn)
        assert status_counts(conn) == {"completed": SESSIONS}
        assert_each_transition_once(conn, "open", "completed")


# -- the server crashes with due sessions pending --------------------------------------


def failed_runs(conn: psycopg.Connection, message: str = "connection failed") -> int:
    row = conn.execute(
        "SELECT count(*) FROM cron.job_run_details WHERE status = 'failed' AND return_message = %s", (message,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def job_runs(conn: psycopg.Connection, status: str | None = None) -> int:
    query = "SELECT count(*) FROM cron.job_run_details d JOIN cron.job j USING (jobid) WHERE j.database = %s"
    params: list[object] = [APP_DATABASE]
    if status is not None:
        query += " AND d.status = %s"
        params.append(status)
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.slow
def test_job_catches_up_after_crash() -> None:
    with Sandbox(cron_database=APP_DATABASE, durable=True) as server:
        server.create_database(APP_DATABASE)
        helpers.upgrade(server.url(APP_DATABASE), "head", batch_size=str(BATCH_SIZE))
        with server.connect(APP_DATABASE) as conn:
            install_audit(conn)
            # Keep the job from running before the crash: the sessions must
            # still be due when the server goes down.
            conn.execute("UPDATE cron.job SET active = false WHERE database = %s", (APP_DATABASE,))
            insert_open_sessions(conn, SESSIONS, T0 + HOUR)
            tick = SlowTick(server, APP_DATABASE).start()
            wait_until_mid_batch(conn, tick)
            server.stop_server(mode="immediate")
            tick.join()
        assert isinstance(tick.error, psycopg.OperationalError)

        server.restart()
        with server.connect(APP_DATABASE) as conn:
            # Every committed batch survived crash recovery, and nothing else.
            assert_batches_atomic(conn)
            before = status_counts(conn).get("completed", 0)
            assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (SESSIONS,)

            runs_before = job_runs(conn)
            conn.execute("UPDATE cron.job SET active = true WHERE database = %s", (APP_DATABASE,))
            # The job judges at now(), which is past T0 + 2 hours for these sessions.
            wait_for(
                lambda: status_counts(conn).get("completed", 0) == SESSIONS,
                timeout=130,
                what="the pg_cron job to complete the remaining sessions",
                interval=1,
            )
            assert before < SESSIONS
            assert_each_transition_once(conn, "open", "completed")
            wait_for(lambda: job_runs(conn, "succeeded") > runs_before, timeout=30, what="the job run record")
            assert job_runs(conn, "failed") == 0


# -- streaming-replica failover -------------------------------------------------------


def seconds_into_minute() -> float:
    now = datetime.now(UTC)
    return now.second + now.microsecond / 1e6


def wait_past_minute_boundary(extra_seconds: float = 8) -> None:
    """Sleep until pg_cron (minute granularity) has had a chance to start the next run."""
    time.sleep(60 - seconds_into_minute() + extra_seconds)


def wait_for_replay(primary: psycopg.Connection, standby: psycopg.Connection) -> None:
    row = primary.execute("SELECT pg_current_wal_lsn()").fetchone()
    assert row is not None
    target = row[0]
    wait_for(
        lambda: standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone() == (True,),
        timeout=30,
        what="the standby to replay the primary's WAL",
    )


@pytest.mark.slow
def test_failover_runs_job_once_on_promoted_standby() -> None:
    with Sandbox(cron_database=APP_DATABASE) as primary_server:
        primary_server.create_database(APP_DATABASE)
        helpers.upgrade(primary_server.url(APP_DATABASE), "head")
        with primary_server.connect(APP_DATABASE) as conn:
            install_audit(conn)

        standby_server = primary_server.start_standby()
        try:
            with standby_server.connect(APP_DATABASE) as standby:
                assert standby.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
                # pg_cron starts its launcher only once recovery has ended.
                assert health.launcher_running(standby) is False

                # Insert right after a minute boundary, so that the primary's
                # job cannot run before the primary stops a few seconds later.
                if seconds_into_minute() > 30:
                    wait_past_minute_boundary(extra_seconds=2)
                with primary_server.connect(APP_DATABASE) as primary:
                    insert_due_scheduled_sessions(primary, 5)
                    wait_for_replay(primary, standby)
                    runs_on_primary = job_runs(primary)
                primary_server.stop_server(mode="fast")

                assert status_counts(standby) == {"scheduled": 5}, "the primary's job ran before it stopped"

                wait_past_minute_boundary()
                assert standby.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
                assert health.launcher_running(standby) is False
                assert status_counts(standby) == {"scheduled": 5}
                assert job_runs(standby) == runs_on_primary

            standby_server.promote()
            with standby_server.connect(APP_DATABASE) as promoted:
                assert promoted.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
                # The job row still names the old primary's socket directory
                # and port (see test_job_row_pins_server_port), so its runs
                # fail until the row is pointed at this server. Real servers
                # that share cron.host (default 'localhost') and port do not
                # need this step.
                wait_for(
                    lambda: failed_runs(promoted) > 0,
                    timeout=130,
                    what="a run against the old primary's address",
                    interval=1,
                )
                assert status_counts(promoted) == {"scheduled": 5}
                promoted.execute(
                    "UPDATE cron.job SET nodename = current_setting('cron.host'), "
                    "nodeport = current_setting('port')::int"
                )
                wait_for(
                    lambda: health.launcher_running(promoted) is True,
                    timeout=30,
                    what="pg_cron's launcher on the promoted standby",
                )
                wait_for(
                    lambda: status_counts(promoted) == {"open": 5},
                    timeout=130,
                    what="the job on the promoted standby to open the sessions",
                    interval=1,
                )
                assert_each_transition_once(promoted, "scheduled", "open")
                wait_for(
                    lambda: job_runs(promoted, "succeeded") > runs_on_primary,
                    timeout=30,
                    what="the job run record on the promoted standby",
                )
        finally:
            standby_server.stop()


# -- the pg_cron launcher is terminated ---------------------------------------------------


def launcher_pid(conn: psycopg.Connection) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = %s", (health.LAUNCHER_BACKEND_TYPE,)
    ).fetchone()
    return int(row[0]) if row else None


def test_launcher_running_detects_terminated_launcher() -> None:
    with Sandbox(cron_database=APP_DATABASE) as server:
        server.create_database(APP_DATABASE)
        with server.connect(APP_DATABASE) as conn:
            wait_for(lambda: launcher_pid(conn) is not None, timeout=30, what="pg_cron's launcher to start")
            assert health.launcher_running(conn) is True

            conn.execute("SELECT pg_terminate_backend(%s)", (launcher_pid(conn),))
            wait_for(lambda: launcher_pid(conn) is None, timeout=30, what="the launcher to exit")
            assert health.launcher_running(conn) is False

            # pg_cron 1.4 does not start it again while the server runs.
            time.sleep(2)
            assert health.launcher_running(conn) is False

        server.restart()
        with server.connect(APP_DATABASE) as conn:
            wait_for(lambda: health.launcher_running(conn) is True, timeout=30, what="the launcher after restart")


def test_launcher_running_unknown_without_stats_role(sandbox: Sandbox, database: str) -> None:
    with sandbox.connect(database) as admin:
        admin.execute("CREATE ROLE launcher_probe_plain LOGIN")
        admin.execute("CREATE ROLE launcher_probe_stats LOGIN IN ROLE pg_read_all_stats")
    try:
        with sandbox.connect(database, user="launcher_probe_plain") as plain:
            assert health.launcher_running(plain) is None
        with sandbox.connect(database, user="launcher_probe_stats") as stats:
            assert health.launcher_running(stats) is True
    finally:
        with sandbox.connect(database) as admin:
            admin.execute("DROP ROLE launcher_probe_plain")
            admin.execute("DROP ROLE launcher_probe_stats")


def test_launcher_running_accepts_sqlalchemy_connection(sandbox: Sandbox, database: str) -> None:
    engine = sa.create_engine(sandbox.url(database), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert health.launcher_running(conn) is True
    finally:
        engine.dispose()


# -- app transactions hold locks on due rows ------------------------------------------------

LOCKS = {
    "for update": "SELECT 1 FROM sessions WHERE id = ANY(%s) FOR UPDATE",
    "for no key update": "SELECT 1 FROM sessions WHERE id = ANY(%s) FOR NO KEY UPDATE",
    "for share": "SELECT 1 FROM sessions WHERE id = ANY(%s) FOR SHARE",
    "uncommitted update": "UPDATE sessions SET title = 'edited' WHERE id = ANY(%s)",
}


@pytest.mark.parametrize("lock", list(LOCKS))
def test_tick_skips_rows_locked_by_app(
    sandbox: Sandbox, migrated_database: str, app_conn: psycopg.Connection, lock: str
) -> None:
    install_audit(app_conn)
    insert_open_sessions(app_conn, 6, T0 + HOUR)
    ids = [row[0] for row in app_conn.execute("SELECT id FROM sessions ORDER BY id")]
    held = ids[:2]

    with sandbox.connect(migrated_database, autocommit=False) as app:
        app.execute(LOCKS[lock], (held,))
        with sandbox.connect(migrated_database) as ticker:
            # Waiting for a lock would fail the tick instead of hanging the test.
            ticker.execute("SET lock_timeout = '2s'")
            row = ticker.execute("SELECT opened, completed FROM advance_session_statuses(%s)", (T0 + HOUR,)).fetchone()
            assert row == (0, 4)
            ticker.execute("CALL advance_session_statuses_in_batches(%s, batch_size => 3)", (T0 + HOUR,))

            held_statuses = app_conn.execute("SELECT DISTINCT status FROM sessions WHERE id = ANY(%s)", (held,))
            assert held_statuses.fetchall() == [("open",)]
            app.commit()

            row = ticker.execute("SELECT opened, completed FROM advance_session_statuses(%s)", (T0 + HOUR,)).fetchone()
            assert row == (0, 2)

    assert status_counts(app_conn) == {"completed": 6}
    assert_each_transition_once(app_conn, "open", "completed")


def test_tick_advances_rows_under_key_share(
    sandbox: Sandbox, migrated_database: str, app_conn: psycopg.Connection
) -> None:
    # FOR KEY SHARE is what a foreign-key check takes when the app inserts a
    # row that references a session. It does not conflict with the tick's
    # FOR NO KEY UPDATE, so the tick advances those rows at once.
    install_audit(app_conn)
    insert_open_sessions(app_conn, 6, T0 + HOUR)
    ids = [row[0] for row in app_conn.execute("SELECT id FROM sessions ORDER BY id")]

    with sandbox.connect(migrated_database, autocommit=False) as app:
        app.execute("SELECT 1 FROM sessions WHERE id = ANY(%s) FOR KEY SHARE", (ids[:2],))
        with sandbox.connect(migrated_database) as ticker:
            ticker.execute("SET lock_timeout = '2s'")
            row = ticker.execute("SELECT opened, completed FROM advance_session_statuses(%s)", (T0 + HOUR,)).fetchone()
            assert row == (0, 6)
        app.commit()

    assert status_counts(app_conn) == {"completed": 6}
    assert_each_transition_once(app_conn, "open", "completed")


def test_tick_keeps_app_change_made_while_locked(
    sandbox: Sandbox, migrated_database: str, app_conn: psycopg.Connection
) -> None:
    # The app cancels a due session in a long transaction; the tick skips it
    # and, after the app commits, leaves the cancellation alone.
    install_audit(app_conn)
    insert_open_sessions(app_conn, 3, T0 + HOUR)
    cancelled = app_conn.execute("SELECT min(id) FROM sessions").fetchone()
    assert cancelled is not None

    with sandbox.connect(migrated_database, autocommit=False) as app:
        app.execute("UPDATE sessions SET status = 'cancelled' WHERE id = %s", cancelled)
        with sandbox.connect(migrated_database) as ticker:
            ticker.execute("SET lock_timeout = '2s'")
            row = ticker.execute("SELECT opened, completed FROM advance_session_statuses(%s)", (T0 + HOUR,)).fetchone()
            assert row == (0, 2)
            app.commit()
            row = ticker.execute("SELECT opened, completed FROM advance_session_statuses(%s)", (T0 + HOUR,)).fetchone()
            assert row == (0, 0)

    assert status_counts(app_conn) == {"completed": 2, "cancelled": 1}


def test_job_row_pins_server_port(sandbox: Sandbox, cron_conn: psycopg.Connection, database: str) -> None:
    # pg_cron copies cron.host and the server's port into the job row when it
    # is scheduled, and connects there on every run. A promoted standby that
    # listens on another port runs the job against a port where no server is.
    helpers.upgrade(sandbox.url(database), "head")
    row = cron_conn.execute(
        "SELECT nodename, nodeport, current_setting('port')::int FROM cron.job WHERE database = %s", (database,)
    ).fetchone()
    assert row is not None
    nodename, nodeport, server_port = row
    assert nodeport == server_port
    assert nodename == str(sandbox.socket_dir)
