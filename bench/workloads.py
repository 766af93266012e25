"""The timed statements: our tick, the naive tick, the floor, and the catch-up.

Each timed tick runs in autocommit mode on a warm connection, so its time
includes the round trip, the statement and the commit (with fsync on a
durable server), as a pg_cron run pays them. The catch-up runs in a new
session, as a pg_cron run does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Json

from bench.database import DueSet

logger = logging.getLogger(__name__)

HISTORY_TABLE = "session_status_transitions"

# Every timed statement starts with a marker comment, by which
# pg_stat_statements (track = top) reports its server execution time.
OURS_SQL = "/* bench:ours */ SELECT opened, completed FROM advance_session_statuses(%s, NULL)"
# The call of each batch of the pg_cron job: the same function with a limit.
JOB_BATCH_SQL = "/* bench:job */ SELECT opened, completed FROM advance_session_statuses(%s, %s)"
# The same batch through the proposed rewrite in bench/candidate.sql.
CANDIDATE_BATCH_SQL = (
    "/* bench:candidate */ SELECT opened, completed FROM bench_candidate.advance_session_statuses(%s, %s)"
)

# The naive tick that many apps run every minute. The instant of each session is rebuilt
# from text on every row, so no index can serve either predicate and both
# UPDATEs read the whole table. The instant is a parameter here instead of
# now(), so that both ticks judge at the same instant; the plan is the same.
NAIVE_COMPLETE_SQL = """/* bench:naive */
UPDATE sessions_naive SET status = 'completed'
WHERE status IN ('scheduled', 'open', 'full')
  AND (session_date || ' ' || start_time)::timestamp + (duration || ' minutes')::interval <= %s
"""
NAIVE_OPEN_SQL = """/* bench:naive */
UPDATE sessions_naive SET status = 'open'
WHERE status = 'scheduled'
  AND (session_date || ' ' || start_time)::timestamp <= %s
"""

# The minimum work of any tick: change exactly the due rows, found by
# primary key from a list computed in advance, in one statement.
FLOOR_UPDATE_SQL = """
UPDATE sessions AS s SET status = v.status
FROM unnest(%(ids)s::bigint[], %(statuses)s::text[]) AS v(id, status)
WHERE s.id = v.id
"""


def time_call(function: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``function`` and return (milliseconds, its result)."""
    started = time.perf_counter_ns()
    result = function()
    return (time.perf_counter_ns() - started) / 1e6, result


def run_ours(conn: psycopg.Connection, as_of: datetime) -> int:
    row = conn.execute(OURS_SQL, (as_of,), prepare=True).fetchone()
    assert row is not None
    return int(row[0]) + int(row[1])


def run_job_batch(conn: psycopg.Connection, as_of: datetime, batch_size: int, *, candidate: bool = False) -> int:
    row = conn.execute(
        CANDIDATE_BATCH_SQL if candidate else JOB_BATCH_SQL, (as_of, batch_size), prepare=True
    ).fetchone()
    assert row is not None
    return int(row[0]) + int(row[1])


def server_milliseconds(conn: psycopg.Connection, marker: str) -> float:
    """Return the total execution time pg_stat_statements has recorded for statements with ``marker``."""
    row = conn.execute(
        "SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND query LIKE %s",
        (f"/* bench:{marker} */%",),
    ).fetchone()
    assert row is not None
    return float(row[0])


def run_naive(conn: psycopg.Connection, as_of: datetime) -> int:
    with conn.transaction():
        completed = conn.execute(NAIVE_COMPLETE_SQL, (as_of,), prepare=True).rowcount  # type: ignore[arg-type]
        opened = conn.execute(NAIVE_OPEN_SQL, (as_of,), prepare=True).rowcount  # type: ignore[arg-type]
    return completed + opened


@dataclass
class Floor:
    """The floor statement for one due set, with the bookkeeping writes our tick makes.

    ``history_rows`` contains the transition history rows that our tick wrote
    in a trial run and that no trigger writes for a plain UPDATE; the floor
    inserts them, column by column, in the same statement.
    """

    ids: list[int]
    statuses: list[str]
    history_columns: list[str] = field(default_factory=list)
    history_rows: list[dict[str, Any]] = field(default_factory=list)
    history_mode: str = "no history table"
    # Rows inserted, updated and deleted per table by one run of each, from
    # pg_stat_xact_user_tables: the check that the floor mirrors our writes.
    writes_ours: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    writes_floor: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Floor:
        return cls(ids=[], statuses=[])

    def sql(self) -> str:
        if not self.history_rows:
            return f"/* bench:floor */ WITH changed AS ({FLOOR_UPDATE_SQL} RETURNING 1) SELECT count(*) FROM changed"
        # A data-modifying WITH query runs to completion even when unread.
        columns = ", ".join(_quote(column) for column in self.history_columns)
        return (
            f"/* bench:floor */ WITH changed AS ({FLOOR_UPDATE_SQL} RETURNING 1), "
            f"history AS (INSERT INTO {HISTORY_TABLE} ({columns}) "
            f"SELECT {columns} FROM json_populate_recordset(NULL::{HISTORY_TABLE}, %(history)s)) "
            "SELECT count(*) FROM changed"
        )

    def params(self) -> dict[str, Any]:
        return {"ids": self.ids, "statuses": self.statuses, "history": Json(self.history_rows)}

    @property
    def mirrors_ours(self) -> bool:
        return self.writes_ours == self.writes_floor


def run_floor(conn: psycopg.Connection, floor: Floor) -> int:
    row = conn.execute(floor.sql(), floor.params(), prepare=True).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def _table_counters(conn: psycopg.Connection) -> dict[str, tuple[int, int, int]]:
    # Since PostgreSQL 15 the xact view also counts earlier transactions of
    # this backend whose statistics are not flushed yet: only differences
    # taken inside one transaction are exact.
    rows = conn.execute("SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables").fetchall()
    return {str(name): (int(i), int(u), int(d)) for name, i, u, d in rows}


def _count_writes(conn: psycopg.Connection, statement: Callable[[], object]) -> dict[str, tuple[int, int, int]]:
    """Run ``statement`` inside the open transaction; return the rows it inserted, updated, deleted per table."""
    before = _table_counters(conn)
    statement()
    after = _table_counters(conn)
    writes = {}
    for name, counts in after.items():
        delta = tuple(new - old for new, old in zip(counts, before.get(name, (0, 0, 0)), strict=True))
        if any(delta):
            writes[name] = delta
    return writes  # type: ignore[return-value]


def _copyable_history_columns(conn: psycopg.Connection) -> list[str]:
    """Return the history table's columns that a copied row sets: no identity, generated or serial column."""
    rows = conn.execute(
        """
        SELECT a.attname
        FROM pg_attribute AS a
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attidentity = '' AND a.attgenerated = ''
          AND coalesce(pg_get_expr(d.adbin, d.adrelid), '') NOT LIKE 'nextval(%%'
        ORDER BY a.attnum
        """,
        (HISTORY_TABLE,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _quote(identifier: str) -> str:
    return psycopg.sql.Identifier(identifier).as_string(None)


def _rows_written_here(conn: psycopg.Connection, columns: list[str]) -> list[dict[str, Any]]:
    """Return the history rows inserted by the current transaction, as column -> value."""
    pairs = ", ".join(f"%s::text, t.{_quote(column)}" for column in columns)
    # xmin is the 32-bit transaction id; pg_current_xact_id() adds the epoch.
    query = (
        f"SELECT json_build_object({pairs}) FROM {HISTORY_TABLE} AS t "
        "WHERE t.xmin::text = (pg_current_xact_id()::text::numeric %% 4294967296)::text"
    )
    return [row[0] for row in conn.execute(query, columns)]  # type: ignore[arg-type]


def build_floor(conn: psycopg.Connection, as_of: datetime, due_set: DueSet, restore: Callable[[], None]) -> Floor:
    """Build the floor for ``due_set`` and check that it writes what our tick writes.

    Runs our tick and the bare floor once each in a transaction that is
    rolled back, with the due set restored before each, and compares the
    rows each wrote per table. When the database has a transition history
    table that our tick fills but a plain UPDATE does not (the function
    writes it, not a trigger), the floor copies the rows our tick wrote.
    """
    floor = Floor(ids=due_set.ids, statuses=["open"] * len(due_set.to_open) + ["completed"] * len(due_set.to_complete))
    has_history = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (HISTORY_TABLE,)).fetchone()[0]  # type: ignore[index]

    restore()
    with conn.transaction(force_rollback=True):
        changed = 0

        def ours() -> None:
            nonlocal changed
            changed = run_ours(conn, as_of)

        floor.writes_ours = _count_writes(conn, ours)
        captured: list[dict[str, Any]] = []
        if has_history:
            captured = _rows_written_here(conn, _copyable_history_columns(conn))
    if changed != len(due_set):
        raise RuntimeError(f"our tick changed {changed} sessions in the trial run, expected {len(due_set)}")

    restore()
    with conn.transaction(force_rollback=True):
        floor.writes_floor = _count_writes(conn, lambda: run_floor(conn, floor))

    if not has_history:
        floor.history_mode = "no history table"
    elif floor.writes_floor.get(HISTORY_TABLE, (0, 0, 0))[0] >= len(captured):
        floor.history_mode = "written by a trigger for both"
    else:
        floor.history_mode = "copied by the floor"
        floor.history_columns = _copyable_history_columns(conn)
        floor.history_rows = captured
        restore()
        with conn.transaction(force_rollback=True):
            floor.writes_floor = _count_writes(conn, lambda: run_floor(conn, floor))
    if not floor.mirrors_ours:
        logger.warning("the floor's writes %s differ from our tick's %s", floor.writes_floor, floor.writes_ours)
    return floor


# -- plans ------------------------------------------------------------------


def explain_function(conn: psycopg.Connection, call: Callable[[], object]) -> dict[str, str]:
    """Run ``call`` once in a rolled-back transaction; return the plans of its statements by pass.

    auto_explain logs the statements inside the function (log_nested_statements)
    at NOTICE level, which the server sends to this client. The plans are
    the ones the connection's cached plans give, as in the timed runs.
    """
    plans: dict[str, str] = {}

    def keep(diagnostic: psycopg.errors.Diagnostic) -> None:
        text = diagnostic.message_primary or ""
        if "Query Text" not in text or "set_config" in text:
            return
        if "SET status = 'completed'" in text:
            plans["completing pass"] = text
        elif "SET status = 'open'" in text:
            plans["opening pass"] = text
        else:
            plans["the call"] = text

    conn.add_notice_handler(keep)
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("LOAD 'auto_explain'")
            for name, value in (
                ("auto_explain.log_min_duration", "0"),
                ("auto_explain.log_analyze", "on"),
                ("auto_explain.log_buffers", "on"),
                ("auto_explain.log_timing", "on"),
                ("auto_explain.log_nested_statements", "on"),
                ("auto_explain.log_level", "notice"),
            ):
                conn.execute("SELECT set_config(%s, %s, true)", (name, value))
            call()
    finally:
        conn.remove_notice_handler(keep)
    return plans


def explain(conn: psycopg.Connection, sql: str, params: Any) -> str:
    """Return EXPLAIN (ANALYZE, BUFFERS) of ``sql``, run in a rolled-back transaction."""
    with conn.transaction(force_rollback=True):
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()  # type: ignore[operator]
    return "\n".join(str(r[0]) for r in rows)


# -- catch-up with concurrent app writes ---------------------------------------


@dataclass
class AppWrites:
    """Latencies (ms) of the app's writes, by kind: book, mark_full, cancel."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {"book": [], "mark_full": [], "cancel": []})

    def all(self) -> list[float]:
        return [value for values in self.latencies.values() for value in values]


def app_write_loop(conninfo: str, stop: threading.Event, out: AppWrites) -> None:
    """Book a session, mark it full and cancel it, in a loop, each write its own transaction.

    The sessions are new ones in the future, so they are never part of the
    tick's backlog and never wait for its row locks.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        while not stop.is_set():
            ms, row = time_call(
                lambda: conn.execute(
                    "INSERT INTO sessions (title, capacity, starts_at, ends_at) "
                    "VALUES ('Booked', 12, now() + interval '3 days', now() + interval '3 days 1 hour') RETURNING id",
                    prepare=True,
                ).fetchone()
            )
            out.latencies["book"].append(ms)
            for kind, status in (("mark_full", "full"), ("cancel", "cancelled")):
                started = time.perf_counter_ns()
                conn.execute("UPDATE sessions SET status = %s WHERE id = %s", (status, row[0]), prepare=True)
                out.latencies[kind].append((time.perf_counter_ns() - started) / 1e6)


def measure_app_writes(conninfo: str, seconds: float) -> AppWrites:
    """Run the app's write loop alone for ``seconds``: the baseline latencies."""
    out = AppWrites()
    stop = threading.Event()
    worker = threading.Thread(target=app_write_loop, args=(conninfo, stop, out), daemon=True)
    worker.start()
    time.sleep(seconds)
    stop.set()
    worker.join()
    return out


def prepare_backlog(conn: psycopg.Connection, as_of: datetime, size: int) -> int:
    """Turn the ``size`` most recently ended completed sessions back into missed ones.

    Half become open and half scheduled, as if the tick had been down since
    before they started or ended; one call completes each of them. Returns
    how many sessions are in the backlog (fewer than ``size`` in a small table).
    """
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        count = conn.execute(
            """
            UPDATE sessions AS s SET status = CASE WHEN s.id %% 2 = 0 THEN 'open' ELSE 'scheduled' END
            FROM (
                SELECT id FROM sessions WHERE status = 'completed' AND ends_at <= %s
                ORDER BY ends_at DESC LIMIT %s
            ) AS backlog
            WHERE s.id = backlog.id
            """,
            (as_of, size),
        ).rowcount
    conn.execute("VACUUM (ANALYZE) sessions")
    conn.execute("CHECKPOINT")
    return count


@dataclass
class CatchUp:
    backlog: int
    seconds: float
    changed: int
    app: AppWrites


def run_catch_up(conninfo: str, as_of: datetime, backlog: int, batch_size: int, *, schema: str = "public") -> CatchUp:
    """CALL the batching procedure in ``schema`` on the backlog while the app writes in a second connection.

    The CALL runs in a new session, as a pg_cron run does, so the function's
    plans are not those cached by earlier calls.
    """
    out = AppWrites()
    stop = threading.Event()
    worker = threading.Thread(target=app_write_loop, args=(conninfo, stop, out), daemon=True)
    call = psycopg.sql.SQL("CALL {}.advance_session_statuses_in_batches(as_of => %s, batch_size => %s)").format(
        psycopg.sql.Identifier(schema)
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        worker.start()
        # Let the writer reach its steady state before the catch-up starts.
        time.sleep(0.3)
        before = {kind: len(values) for kind, values in out.latencies.items()}
        seconds_ms, _ = time_call(lambda: conn.execute(call, (as_of, batch_size)))
        after = {kind: len(values) for kind, values in out.latencies.items()}
        stop.set()
        worker.join()
        still_due = conn.execute(
            "SELECT count(*) FROM sessions WHERE status IN ('scheduled', 'open', 'full') AND ends_at <= %s", (as_of,)
        ).fetchone()[0]  # type: ignore[index]
    during = AppWrites({kind: out.latencies[kind][before[kind] : after[kind]] for kind in out.latencies})
    return CatchUp(backlog=backlog, seconds=seconds_ms / 1000, changed=backlog - int(still_due), app=during)
