"""The timed statements: our tick, the naive tick, the floor, and the catch-up.

Each timed tick runs in autocommit mode on a warm connection, so its time
includes the round trip, the statement and the commit (with fsync on a
durable server), as a pg_cron run pays them. The catch-up runs in a new
session, as a pg_cron run does.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from bench.database import DueSet

logger = logging.getLogger(__name__)

HISTORY_TABLE = "session_status_transitions"

# Every timed statement starts with a marker comment, by which
# pg_stat_statements (track = top) reports its server execution time.
OURS_SQL = "/* bench:ours */ SELECT opened, completed FROM advance_session_statuses(%s, NULL)"
# The call of each batch of the pg_cron job: the same function with a limit.
JOB_BATCH_SQL = "/* bench:job */ SELECT opened, completed FROM advance_session_statuses(%s, %s)"

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
# primary key from lists computed in advance, in one statement. Each UPDATE
# reads the rows by primary key, as the tick's own UPDATEs do. A join of the
# ids to sessions would let the planner read the whole table.
FLOOR_UPDATES_SQL = """
opened AS (UPDATE sessions SET status = 'open' WHERE id = ANY(%(to_open)s::bigint[]) RETURNING 1),
completed AS (UPDATE sessions SET status = 'completed' WHERE id = ANY(%(to_complete)s::bigint[]) RETURNING 1)
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


def run_job_batch(conn: psycopg.Connection, as_of: datetime, batch_size: int) -> int:
    row = conn.execute(JOB_BATCH_SQL, (as_of, batch_size), prepare=True).fetchone()
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

    ``history_values`` contains, column by column as text, the transition
    history rows that our tick wrote in a trial run and that no trigger
    writes for a plain UPDATE; the floor inserts them in the same statement.
    """

    to_open: list[int]
    to_complete: list[int]
    # (name, SQL type) of each history column the floor sets, and its values.
    history_columns: list[tuple[str, str]] = field(default_factory=list)
    history_values: list[list[str | None]] = field(default_factory=list)
    history_mode: str = "no history table"
    # Rows inserted, updated and deleted per table by one run of each, from
    # pg_stat_xact_user_tables: the check that the floor mirrors our writes.
    writes_ours: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    writes_floor: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    # Calls per trigger function in the same runs, from pg_stat_xact_user_functions.
    trigger_calls_ours: dict[str, int] = field(default_factory=dict)
    trigger_calls_floor: dict[str, int] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Floor:
        return cls(to_open=[], to_complete=[])

    @property
    def history_rows(self) -> int:
        return len(self.history_values[0]) if self.history_values else 0

    def sql(self) -> str:
        count = "SELECT (SELECT count(*) FROM opened) + (SELECT count(*) FROM completed)"
        if not self.history_rows:
            return f"/* bench:floor */ WITH {FLOOR_UPDATES_SQL} {count}"
        # A data-modifying WITH query runs to completion even when unread.
        columns = ", ".join(_quote(name) for name, _ in self.history_columns)
        arrays = ", ".join(
            f"%(history_{i})s::text[]::{sql_type}[]" for i, (_, sql_type) in enumerate(self.history_columns)
        )
        return (
            f"/* bench:floor */ WITH {FLOOR_UPDATES_SQL}, "
            f"history AS (INSERT INTO {HISTORY_TABLE} ({columns}) SELECT * FROM unnest({arrays})) "
            f"{count}"
        )

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"to_open": self.to_open, "to_complete": self.to_complete}
        for i, values in enumerate(self.history_values):
            params[f"history_{i}"] = values
        return params

    @property
    def mirrors_ours(self) -> bool:
        return self.writes_ours == self.writes_floor and self.trigger_calls_ours == self.trigger_calls_floor


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


def _trigger_calls(conn: psycopg.Connection) -> dict[str, int]:
    # Counted only while track_functions is 'pl' or 'all'.
    rows = conn.execute(
        "SELECT f.funcname, f.calls FROM pg_stat_xact_user_functions AS f "
        "JOIN pg_proc AS p ON p.oid = f.funcid WHERE p.prorettype = 'trigger'::regtype"
    ).fetchall()
    return {str(name): int(calls) for name, calls in rows}


@dataclass
class Writes:
    """Rows written per table, as (inserted, updated, deleted), and calls per trigger function."""

    rows: dict[str, tuple[int, int, int]]
    trigger_calls: dict[str, int]


def _count_writes(conn: psycopg.Connection, statement: Callable[[], object]) -> Writes:
    """Run ``statement`` inside the open transaction; return the rows it wrote and the triggers it fired.

    Sets track_functions for the rest of the transaction, so that the
    trigger calls are counted (it needs superuser, as the benchmark runs).
    """
    conn.execute("SET LOCAL track_functions = 'pl'")
    before, calls_before = _table_counters(conn), _trigger_calls(conn)
    statement()
    after, calls_after = _table_counters(conn), _trigger_calls(conn)
    rows = {}
    for name, counts in after.items():
        delta = tuple(new - old for new, old in zip(counts, before.get(name, (0, 0, 0)), strict=True))
        if any(delta):
            rows[name] = delta
    calls = {name: count - calls_before.get(name, 0) for name, count in calls_after.items()}
    return Writes(rows=rows, trigger_calls={name: count for name, count in calls.items() if count})  # type: ignore[arg-type]


def _copyable_history_columns(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """Return (name, SQL type) of the history table's columns that a copied row sets.

    Identity, generated and serial columns are left out: the floor lets them take their own values.
    """
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod)
        FROM pg_attribute AS a
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attidentity = '' AND a.attgenerated = ''
          AND coalesce(pg_get_expr(d.adbin, d.adrelid), '') NOT LIKE 'nextval(%%'
        ORDER BY a.attnum
        """,
        (HISTORY_TABLE,),
    ).fetchall()
    return [(str(name), str(sql_type)) for name, sql_type in rows]


def _quote(identifier: str) -> str:
    return psycopg.sql.Identifier(identifier).as_string(None)


def _values_written_here(conn: psycopg.Connection, columns: list[tuple[str, str]]) -> list[list[str | None]]:
    """Return the history rows inserted by the current transaction, column by column, as text."""
    selected = ", ".join(f"t.{_quote(name)}::text" for name, _ in columns)
    # xmin is the 32-bit transaction id; pg_current_xact_id() adds the epoch.
    query = (
        f"SELECT {selected} FROM {HISTORY_TABLE} AS t "
        "WHERE t.xmin::text = (pg_current_xact_id()::text::numeric %% 4294967296)::text"
    )
    rows = conn.execute(query, ()).fetchall()  # type: ignore[arg-type]
    return [[row[i] for row in rows] for i in range(len(columns))]


def build_floor(conn: psycopg.Connection, as_of: datetime, due_set: DueSet, restore: Callable[[], None]) -> Floor:
    """Build the floor for ``due_set`` and check that it writes what our tick writes.

    Runs our tick and the bare floor once each in a transaction that is
    rolled back, with the due set restored before each, and compares the
    rows each wrote per table and the calls of each trigger function. When
    the database has a transition history table that our tick fills but a
    plain UPDATE does not (the function writes it, not a trigger), the floor
    copies the rows our tick wrote. That is the case at head.
    """
    floor = Floor(to_open=due_set.to_open, to_complete=due_set.to_complete)
    has_history = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (HISTORY_TABLE,)).fetchone()[0]  # type: ignore[index]

    restore()
    with conn.transaction(force_rollback=True):
        changed = 0

        def ours() -> None:
            nonlocal changed
            changed = run_ours(conn, as_of)

        ours_writes = _count_writes(conn, ours)
        floor.writes_ours, floor.trigger_calls_ours = ours_writes.rows, ours_writes.trigger_calls
        columns = _copyable_history_columns(conn) if has_history else []
        captured = _values_written_here(conn, columns) if has_history else []
        captured_rows = len(captured[0]) if captured else 0
    if changed != len(due_set):
        raise RuntimeError(f"our tick changed {changed} sessions in the trial run, expected {len(due_set)}")

    restore()
    with conn.transaction(force_rollback=True):
        floor_writes = _count_writes(conn, lambda: run_floor(conn, floor))

    if not has_history:
        floor.history_mode = "no history table"
    elif floor_writes.rows.get(HISTORY_TABLE, (0, 0, 0))[0] >= captured_rows:
        floor.history_mode = "written by a trigger for both"
    else:
        floor.history_mode = "copied by the floor"
        floor.history_columns = columns
        floor.history_values = captured
        restore()
        with conn.transaction(force_rollback=True):
            floor_writes = _count_writes(conn, lambda: run_floor(conn, floor))
    floor.writes_floor, floor.trigger_calls_floor = floor_writes.rows, floor_writes.trigger_calls
    if not floor.mirrors_ours:
        logger.warning(
            "the floor's writes %s and trigger calls %s differ from our tick's %s and %s",
            floor.writes_floor,
            floor.trigger_calls_floor,
            floor.writes_ours,
            floor.trigger_calls_ours,
        )
    return floor


# -- plans ------------------------------------------------------------------


def statement_label(text: str) -> str:
    """Return the label of a statement of the tick from its auto_explain entry, or "" for an unknown one.

    The tick first checks whether anything is due and returns when nothing
    is. Otherwise it runs, per pass, a SELECT that locks the due rows, an
    UPDATE of those rows and an INSERT of their history rows, then sends one
    notification. The labels follow that order.
    """
    if "/* bench:" in text:
        return "the call"
    if "min(s.ends_at)" in text:
        return "due check"
    if "pg_notify" in text:
        return "notification"
    if "INSERT INTO" in text:
        return "completing pass: history insert" if "'completed'" in text else "opening pass: history insert"
    if "SET status = 'completed'" in text:
        return "completing pass: update"
    if "SET status = 'open'" in text:
        return "opening pass: update"
    if "UPDATE SKIP LOCKED" in text:
        completing = "IN ('scheduled', 'open', 'full')" in text
        return "completing pass: lock due rows" if completing else "opening pass: lock due rows"
    return ""


# A literal array of more values than this is shortened in the plans.
MAX_ARRAY_VALUES_SHOWN = 4
_ARRAY_LITERAL = re.compile(r"'\{([^'{}]*)\}'::(\w+)\[\]")


def shorten_arrays(plan: str) -> str:
    """Shorten the literal arrays of a plan (a custom plan inlines the batch's ids) to their first values."""

    def shorten(match: re.Match[str]) -> str:
        values = match.group(1).split(",")
        if len(values) <= MAX_ARRAY_VALUES_SHOWN:
            return match.group(0)
        first_values = ",".join(values[:MAX_ARRAY_VALUES_SHOWN])
        return f"'{{{first_values},...}}'::{match.group(2)}[] ({len(values):,} values)"

    return _ARRAY_LITERAL.sub(shorten, plan)


def explain_function(conn: psycopg.Connection, call: Callable[[], object]) -> dict[str, str]:
    """Run ``call`` once in a rolled-back transaction; return the plans of its statements by label.

    auto_explain logs the statements inside the function (log_nested_statements)
    at NOTICE level, which the server sends to this client. The plans are
    the ones the connection's cached plans give, as in the timed runs. The
    labels come from statement_label(), in the order the statements ran.
    Utility statements such as LOCK TABLE have no plan and do not appear.
    """
    entries: list[tuple[str, str]] = []

    def keep(diagnostic: psycopg.errors.Diagnostic) -> None:
        text = diagnostic.message_primary or ""
        if "Query Text" not in text or "set_config" in text:
            return
        label = statement_label(text) or f"statement {len(entries) + 1}"
        entries.append((label, shorten_arrays(text)))

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

    # The call's own entry comes last because its statement ends last; list it last too.
    plans: dict[str, str] = {}
    for label, text in entries:
        key = label
        while key in plans:
            key += " (again)"
        plans[key] = text
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


def run_catch_up(conninfo: str, as_of: datetime, backlog: int, batch_size: int) -> CatchUp:
    """CALL the batching procedure on the backlog while the app writes in a second connection.

    The CALL runs in a new session, as a pg_cron run does, so the function's
    plans are not those cached by earlier calls.
    """
    out = AppWrites()
    stop = threading.Event()
    worker = threading.Thread(target=app_write_loop, args=(conninfo, stop, out), daemon=True)
    call = "CALL advance_session_statuses_in_batches(as_of => %s, batch_size => %s)"
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
