"""Markdown rendering of the results, written to docs/benchmarks.md."""

from __future__ import annotations

import re

from bench.report import (
    DUE_SPEEDUP_GOAL,
    METHOD_TITLES,
    METHODS,
    SCENARIOS,
    Results,
    Summary,
    format_ms,
    format_ratio,
    percentile,
    verdict,
)
from bench.workloads import MAX_ARRAY_VALUES_SHOWN

METHOD_TEXT = """\
Each size gets its own database, migrated to head with the package's
revisions. The package's three pg_cron jobs for it (the tick and the two
retention jobs) are unscheduled, so that only the benchmark ticks. One
`INSERT ... SELECT FROM generate_series` loads the sessions, with starts
spread at random over two years around the reference instant (584 days
before, 146 after) and durations of 30 to 120 minutes. Past sessions are
completed (93 %) or cancelled, running ones open or full, future ones
scheduled (90 %), full or cancelled. The same rows are copied into
`sessions_naive` (`session_date date`, `start_time time`, `duration int`
minutes, indexed by primary key and `(session_date, start_time)`).

All ticks judge at the same instant, the start of the minute of the load:

- **ours**: `SELECT * FROM advance_session_statuses(as_of, NULL)`. At head
  the call locks `session_status_transitions` in EXCLUSIVE mode, then in each
  pass (completing, then opening) selects the due rows with
  `FOR NO KEY UPDATE SKIP LOCKED`, updates them by primary key and inserts
  one history row per transition. It sends one notification when it changed
  anything.
- **job batch**: `advance_session_statuses(as_of, batch_size)`, the call
  each batch of the pg_cron job makes, with the plans a pg_cron run gets.
- **naive**: in one transaction,
  `UPDATE sessions_naive SET status = 'completed' WHERE status IN (...) AND
  (session_date || ' ' || start_time)::timestamp + (duration || ' minutes')::interval <= as_of`
  and `UPDATE ... SET status = 'open' WHERE status = 'scheduled' AND
  (session_date || ' ' || start_time)::timestamp <= as_of`. The instant is a
  parameter instead of `now()` so that both ticks see the same due rows; the
  plan is the same full scan either way.
- **floor**: one statement that makes our tick's writes and nothing else:
  two `UPDATE sessions ... WHERE id = ANY(ids)`, one per new status, of
  exactly the due rows, by primary key, from lists computed in advance, and
  an `INSERT ... SELECT * FROM unnest(...)` into `session_status_transitions`
  of the history rows that our tick wrote in a rolled-back trial run. The
  status guard trigger fires once per changed row for the floor as for our
  tick. The floor does not search for the due rows, lock them before the
  update, lock the history table or send a notification: those are the
  tick's own costs above the floor. Its end-to-end time also includes
  sending the ids and history rows as parameters, which our tick does not
  need. The floor check below compares the writes of both.

Each tick runs in autocommit mode on a warm connection. It is timed twice:
from Python around the call, so the time includes the round trip, the
statement and its commit (fsync on), and on the server by
pg_stat_statements, which gives the statement's execution time alone.

With 0 due nothing is written. With due rows, half of them open and half
complete. Between repetitions, an UPDATE outside the timed section puts
them back. It runs with `session_replication_role = replica`, so that the
guard allows the way back. Then `VACUUM (INDEX_CLEANUP ON)` removes the dead
rows, so every repetition does the same work on a clean table. Autovacuum
is off for both tables. One untimed round precedes the timed ones, and the
methods alternate within each round.

The catch-up turns the most recently ended completed sessions back into
missed ones, half open and half scheduled. A new session, as in a pg_cron
run, then completes them with
`CALL advance_session_statuses_in_batches(as_of, batch_size)`. Meanwhile a
second connection books a session (INSERT), marks it full and cancels it,
in a loop, each write its own transaction. The same loop runs alone first,
for the baseline.
"""


def _tick_table(results: Results, *, server: bool) -> list[str]:
    lines = [
        f"| sessions | due | {' | '.join(METHOD_TITLES[m] for m in METHODS)} | naive / ours | ours / floor |",
        "|---:|---:|" + "---:|" * len(METHODS) + "---:|---:|",
    ]
    for size in sorted(results.sizes, key=lambda r: r.size):
        for scenario in SCENARIOS:
            cells = []
            for method in METHODS:
                summary = size.summary(scenario, method, server=server)
                cells.append(f"{format_ms(summary.median)} ({format_ms(summary.p10)}-{format_ms(summary.p90)})")
            ratio_floor = (
                format_ratio(size.ratio(scenario, "ours", "floor", server=server)) if scenario == "due" else "-"
            )
            lines.append(
                f"| {size.size:,} | {0 if scenario == 'idle' else size.due} | {' | '.join(cells)} "
                f"| {format_ratio(size.ratio(scenario, 'naive', 'ours', server=server))} | {ratio_floor} |"
            )
    return lines


def _tick_section(results: Results) -> list[str]:
    back_to_back = ", ".join(
        f"{size.size:,}: {format_ms(Summary.of(size.back_to_back).median)} ms"
        for size in sorted(results.sizes, key=lambda r: r.size)
        if size.back_to_back
    )
    loads = ", ".join(
        f"{size.size:,}: {size.load_seconds:.0f} s" for size in sorted(results.sizes, key=lambda r: r.size)
    )
    return [
        "## Tick time",
        "",
        f"Milliseconds, median (p10-p90) of n = {results.repeat} repetitions per cell. The columns:",
        "",
        "- **ours**: `advance_session_statuses(as_of, NULL)` on a warm connection, where PostgreSQL may "
        "switch the function's statements to generic plans after their first five executions (the plans "
        "below show which: a generic plan reads `$1` where a custom one shows the value).",
        f"- **job batch**: `advance_session_statuses(as_of, {results.batch_size})`, the call of each batch of "
        "the pg_cron job, with `plan_cache_mode = force_custom_plan`. pg_cron runs each job in a new session, "
        "where the function's statements are planned for the actual as_of and LIMIT on their first five "
        "executions.",
        "- **floor** and **naive**: as described under Method.",
        "",
        "Server execution time (pg_stat_statements, `track = top`): the statement's work on the server, "
        "without the round trip and the commit.",
        "",
        *_tick_table(results, server=True),
        "",
        "End to end, timed in Python around the call: round trip, statement and commit (WAL flush with fsync "
        "when the tick wrote).",
        "",
        *_tick_table(results, server=False),
        "",
        "The methods alternate within each round, so at 1M sessions most ticks follow a full scan or a "
        "VACUUM of a large table and start with cold CPU caches. Our idle tick run again right after the "
        f"timed one takes (server, median): {back_to_back}.",
        "",
        f"Load time per size (both tables, indexes, VACUUM ANALYZE): {loads}.",
        "",
    ]


def _catch_up_section(results: Results) -> list[str]:
    catch_up = results.catch_up
    if catch_up is None or results.baseline is None:
        return ["## Catch-up", "", "Not measured in this run (`--backlog 0`).", ""]
    rate = catch_up.changed / catch_up.seconds

    lines = [
        "## Catch-up",
        "",
        f"{catch_up.changed:,} transitions at {results.largest.size:,} sessions in {catch_up.seconds:.2f} s: "
        f"**{rate:,.0f} transitions/s** (`batch_size => {results.batch_size:,}`, one run).",
        "",
    ]

    lines += [
        "App writes, milliseconds:",
        "",
        "| | n | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|",
    ]

    for label, writes in (("alone", results.baseline), ("during the catch-up", catch_up.app)):
        values = sorted(writes.all())
        if not values:
            lines.append(f"| {label} | 0 | - | - | - |")
            continue
        lines.append(
            f"| {label} | {len(values):,} | {format_ms(percentile(values, 50))} "
            f"| {format_ms(percentile(values, 99))} | {format_ms(values[-1])} |"
        )
    lines.append("")
    return lines


def _median(results: Results, scenario: str, method: str, *, server: bool = True) -> str:
    return format_ms(results.largest.summary(scenario, method, server=server).median)


# -- facts read from the plans of this run ----------------------------------

_INDEX_SCAN = re.compile(
    r"(?:Bitmap Index Scan on|Index Scan using|Index Only Scan using) (\S+) .*?"
    r"actual time=[\d.]+\.\.[\d.]+ rows=(\d+) loops=(\d+)"
)
_DURATION = re.compile(r"duration: ([\d.]+) ms")

# The index whose range ends_at > as_of covers every session that is not final and ends after as_of.
COMPLETE_INDEX = "sessions_due_to_complete_idx"


def find_plan(results: Results, label: str, *, title_start: str, catch_up: bool = False) -> str:
    """Return the plan of the statement ``label`` in the plan titled ``title_start...``, or "" when there is none."""
    for title, plan in results.plans.items():
        if title.startswith(title_start) and title.endswith(f": {label}") and ("catch-up" in title) == catch_up:
            return plan
    return ""


def index_entries(plan: str, index: str) -> int:
    """Return how many entries the plan's scans of ``index`` returned (rows times loops)."""
    return sum(int(rows) * int(loops) for name, rows, loops in _INDEX_SCAN.findall(plan) if name == index)


def plan_milliseconds(plan: str) -> str:
    match = _DURATION.search(plan)
    return f"{float(match.group(1)):.2f}" if match else "-"


def _call_split(results: Results, title_start: str) -> str:
    """Split the call's time in a plan run into its statements' execution and the rest, as a sentence."""
    call = statements = 0.0
    for title, plan in results.plans.items():
        match = _DURATION.search(plan)
        if not title.startswith(f"{title_start}: ") or match is None:
            continue
        if title.endswith(": the call"):
            call = float(match.group(1))
        else:
            statements += float(match.group(1))
    if call <= 0:
        return ""
    return (
        f"In the plan run the call took {call:.3f} ms, of which the execution of its statements took "
        f"{statements:.3f} ms. The rest is spent outside the statements' execution: in the LOCK TABLE (which "
        "has no plan), in PL/pgSQL and in the plan cache."
    )


def _back_to_back(results: Results) -> str:
    return ", ".join(
        f"{format_ms(Summary.of(size.back_to_back).median)} ms at {size.size:,}"
        for size in sorted(results.sizes, key=lambda r: r.size)
        if size.back_to_back
    )


def row_access(plan: str) -> str:
    """Return how an UPDATE's plan reaches its rows: a join node, "primary key", "Seq Scan" or ""."""
    for node in ("Hash Join", "Merge Join", "Nested Loop"):
        if node in plan:
            return node
    if "Index Scan using sessions_pkey" in plan:
        return "primary key"
    if "Seq Scan on sessions" in plan:
        return "Seq Scan"
    return ""


def job_batch_title(results: Results) -> str:
    return f"job batch (max_transitions {results.batch_size:,})"


def _opening_scan(results: Results, title_start: str) -> str:
    """Describe the opening pass's scan of COMPLETE_INDEX in a plan, or return "" when it did not read that index.

    An opening pass that reads only sessions_due_to_open_idx reads about one
    entry per due row. When the planner also serves ``ends_at > as_of`` from
    COMPLETE_INDEX, the pass reads an entry per future session instead.
    """
    plan = find_plan(results, "opening pass: lock due rows", title_start=title_start)
    entries = index_entries(plan, COMPLETE_INDEX)
    if entries <= results.largest.due:
        return ""
    node = " (a BitmapAnd)" if "BitmapAnd" in plan else ""
    return (
        f"The opening pass's SELECT combined `sessions_due_to_open_idx` with a range scan of `{COMPLETE_INDEX}` "
        f"for `ends_at > as_of`{node}. That scan read {entries:,} index entries, one per session that is not "
        f"final and ends after as_of, to find at most {results.largest.due} due rows, and the SELECT took "
        f"{plan_milliseconds(plan)} ms in the plan run (see the plans)."
    )


OPENING_SCAN_FIX = (
    "What would close it: a new revision whose opening pass applies `ends_at > as_of` as a filter on the rows "
    "that `sessions_due_to_open_idx` returns, in a form the planner cannot serve from "
    f"`{COMPLETE_INDEX}`, so that the pass reads only the entries of scheduled sessions that have started."
)


def _with_scan(note: str, scan: str) -> str:
    return f"{note} {scan} {OPENING_SCAN_FIX}" if scan else note


def _floor_bound(results: Results, method: str) -> str:
    """Return how far the floor limits the ratio of ``method`` to the naive tick, with this run's numbers."""
    largest = results.largest
    bound = largest.ratio("due", "naive", "floor", server=True)
    floor_work = (
        f"The floor's {largest.due} status updates and {largest.due} history rows take "
        f"{_median(results, 'due', 'floor')} ms on the server: per row the guard trigger, a new row version, "
        "its index entries and a history row with its own index entries."
    )
    if bound is None or bound >= DUE_SPEEDUP_GOAL:
        return f"{floor_work} The floor alone meets the goal here (naive / floor is {format_ratio(bound)})."
    subject = "Our tick" if method == "ours" else f"The {METHOD_TITLES[method]}"
    return (
        f"No tick can beat the floor, and here naive / floor is only {format_ratio(bound)}. {floor_work} This "
        f"CPU scans the naive table's {largest.size:,} cached rows in {_median(results, 'due', 'naive')} ms. "
        f"{subject} takes {format_ratio(largest.ratio('due', method, 'floor', server=True))} the floor's time. "
        "Even a tick at the floor stays below the goal on this machine: the ratio grows only with a larger or "
        "uncached naive table, whose full scan takes longer."
    )


def _ours_title(results: Results, scenario: str) -> str:
    largest = results.largest
    return f"ours, {'idle' if scenario == 'idle' else f'{largest.due} due'}, {largest.size:,} sessions"


IDLE_FIX = (
    "What would close it: an idle tick that skips its writing statements and the LOCK TABLE when the two "
    "partial indexes have no due entry, so that it runs two index probes and nothing else."
)


def _idle_note(results: Results) -> str:
    numbers = (
        f"An idle tick changes nothing. It takes {_median(results, 'idle', 'ours')} ms on the server "
        f"({_median(results, 'idle', 'ours', server=False)} ms end to end, where the floor's empty statement "
        f"takes {_median(results, 'idle', 'floor', server=False)} ms), and the naive tick's full scan "
        f"{_median(results, 'idle', 'naive')} ms."
    )
    scan = _opening_scan(results, _ours_title(results, "idle"))
    if scan:
        return f"{numbers} {scan} That scan grows with the number of future sessions. {OPENING_SCAN_FIX}"
    return (
        f"{numbers} Its statements find nothing in the partial indexes (a few buffer hits each, see the "
        f"plans). {_call_split(results, _ours_title(results, 'idle'))} The timed idle ticks follow full scans "
        "and VACUUMs of large tables, so they start with cold CPU caches. Run again at once, with warm caches, "
        f"the idle tick takes {_back_to_back(results)} (server, median). {IDLE_FIX}"
    )


def _job_note(results: Results) -> str:
    title = job_batch_title(results)
    access = row_access(find_plan(results, "completing pass: update", title_start=title))
    if access in ("Hash Join", "Merge Join", "Seq Scan"):
        return (
            "The pg_cron job calls the function with max_transitions = batch_size. With that LIMIT the "
            f"planner joined the locked rows to sessions with a {access} that reads every row of the table "
            "(see the job batch plans), so whenever anything is due a batch costs a full scan: "
            f"{_median(results, 'due', 'job')} ms. What would close it: an UPDATE that finds the locked rows "
            "by primary key."
        )
    times = (
        f"takes {_median(results, 'due', 'job')} ms on the server against {_median(results, 'due', 'ours')} ms "
        f"for ours (idle: {_median(results, 'idle', 'job')} ms against {_median(results, 'idle', 'ours')} ms)."
    )
    found = (
        "The job batch's UPDATEs found their rows by primary key (see the job batch plans), as ours do. "
        f"The batch {times}"
        if access == "primary key"
        else f"The job batch {times}"
    )
    largest = results.largest
    scan = _opening_scan(results, f"{title}, {largest.due} due, {largest.size:,} sessions")
    if not scan:
        return f"{found} {_floor_bound(results, 'job')}"
    ours_plan = find_plan(results, "opening pass: lock due rows", title_start=_ours_title(results, "due"))
    if ours_plan and index_entries(ours_plan, COMPLETE_INDEX) <= largest.due and "<= $" in ours_plan:
        scan += (
            " Our tick, on a warm connection, reuses a generic plan (its conditions read `$1`) whose opening "
            "pass reads only `sessions_due_to_open_idx`, while each batch of the job is planned for its actual "
            "as_of, as in a new pg_cron session."
        )
    return f"{found} {scan} {OPENING_SCAN_FIX} {_floor_bound(results, 'job')}"


def _floor_note(results: Results) -> str:
    note = (
        f"Our tick takes {_median(results, 'due', 'ours')} ms on the server against the floor's "
        f"{_median(results, 'due', 'floor')} ms. It does more than the floor: it searches the partial "
        "indexes for the due rows, locks each one FOR NO KEY UPDATE before it updates it (one more heap "
        "write per row), locks the history table and sends a notification."
    )
    return _with_scan(note, _opening_scan(results, _ours_title(results, "due")))


def _growth_note(results: Results) -> str:
    numbers = (
        f"The idle tick takes {format_ms(results.smallest.summary('idle', 'ours', server=True).median)} ms "
        f"on the server at {results.smallest.size:,} sessions and {_median(results, 'idle', 'ours')} ms at "
        f"{results.largest.size:,}."
    )
    scan = _opening_scan(results, _ours_title(results, "idle"))
    if scan:
        return f"{numbers} {scan} That count grows with the table. {OPENING_SCAN_FIX}"
    return (
        f"{numbers} An idle tick's index probes grow with the index depth only. The timed idle ticks "
        "follow full scans and VACUUMs of the larger tables, so their growth is mostly CPU cache misses. "
        f"Run again at once, with warm caches, the idle tick takes {_back_to_back(results)} (server, median). "
        f"{IDLE_FIX}"
    )


def _catch_up_note(results: Results) -> str:
    title = job_batch_title(results)
    access = row_access(find_plan(results, "completing pass: update", title_start=title, catch_up=True))
    if access in ("Hash Join", "Merge Join", "Seq Scan"):
        return (
            f"The first batch joined its {results.batch_size:,} locked rows to all {results.largest.size:,} "
            f"sessions with a {access} (see the catch-up batch plans), so each batch costs a full scan and the "
            "rate falls as the table grows. What would close it: an UPDATE that finds the locked rows by "
            "primary key."
        )
    steps = {
        "selecting and locking the due rows": "completing pass: lock due rows",
        "updating them": "completing pass: update",
        "inserting their history rows": "completing pass: history insert",
    }
    spent = ", ".join(
        f"{step} {plan_milliseconds(find_plan(results, label, title_start=title, catch_up=True))} ms"
        for step, label in steps.items()
    )
    return (
        "The first batch found its rows by primary key (see the catch-up batch plans), so its time goes "
        f"into the rows themselves. Of its {results.batch_size:,} transitions, in the plan run: {spent}. "
        "Each batch also ends with a commit and its WAL flush. What would close it is less work per "
        "transition, since the plans have no step that grows with the table."
    )


def _due_note(results: Results) -> str:
    return _with_scan(_floor_bound(results, "ours"), _opening_scan(results, _ours_title(results, "due")))


def _app_p99_note(results: Results) -> str:
    return (
        "The app's writes compete with the catch-up for WAL flushes and for the CPU. Smaller batches "
        "shorten each flush; a pause between batches would bound the catch-up's share."
    )


_MISS_NOTES = {
    "idle": _idle_note,
    "due": _due_note,
    "job": _job_note,
    "floor": _floor_note,
    "growth": _growth_note,
    "catch_up": _catch_up_note,
    "app_p99": _app_p99_note,
}


def miss_note(key: str, results: Results) -> str:
    """Return why the target ``key`` can miss and what would close the gap, with this run's numbers."""
    note = _MISS_NOTES.get(key)
    return note(results) if note else ""


def _targets_section(results: Results) -> list[str]:
    lines = [
        "## Targets",
        "",
        "Tick goals are judged on server execution time; the end-to-end ratio is shown for comparison.",
        "",
        "| target | goal | server | result | end to end | result |",
        "|---|---|---:|---|---:|---|",
    ]
    for target in results.targets:
        lines.append(
            f"| {target.name} | {target.goal} | {target.measured} | {verdict(target.passed)} "
            f"| {target.measured_end_to_end} | {verdict(target.passed_end_to_end)} |"
        )
    misses = [target for target in results.targets if target.passed is False]
    if misses:
        lines += ["", "### Missed targets", ""]
        for target in misses:
            lines += [f"**{target.name}**: {target.shortfall}. {miss_note(target.key, results)}", ""]
    lines.append("")
    return lines


HISTORY_MODE_TEXT = {
    "copied by the floor": (
        "our tick writes the transition history itself and no trigger writes it for a plain UPDATE, so the "
        "floor inserts copies of the history rows our tick wrote in the trial run, in the same statement as "
        "its UPDATEs."
    ),
    "written by a trigger for both": "a trigger on sessions writes the transition history for both.",
    "no history table": "the schema has no transition history table.",
}


def _floor_section(results: Results) -> list[str]:
    floor = results.largest.floor
    if floor is None:
        return []

    def writes(table: dict[str, tuple[int, int, int]]) -> str:
        return ", ".join(
            f"`{name}` {i} inserted, {u} updated, {d} deleted" for name, (i, u, d) in sorted(table.items())
        )

    def calls(table: dict[str, int]) -> str:
        return ", ".join(f"`{name}` {count}" for name, count in sorted(table.items()))

    return [
        "## Floor check",
        "",
        f"Transition history: {HISTORY_MODE_TEXT.get(floor.history_mode, floor.history_mode)} Rows written "
        f"and trigger functions called by one tick with {results.largest.due} due at "
        f"{results.largest.size:,} sessions, from `pg_stat_xact_user_tables` and `pg_stat_xact_user_functions` "
        "in rolled-back trial runs:",
        "",
        f"- ours: {writes(floor.writes_ours) or 'no rows'}; triggers: {calls(floor.trigger_calls_ours) or 'none'}",
        f"- floor: {writes(floor.writes_floor) or 'no rows'}; triggers: {calls(floor.trigger_calls_floor) or 'none'}",
        "",
        "The floor writes the same rows as our tick and fires the same triggers as often."
        if floor.mirrors_ours
        else "**The floor does not make the same writes as our tick**; its ratio is not a fair bound.",
        "",
    ]


def render(results: Results) -> str:
    """Return docs/benchmarks.md for ``results``."""
    lines = [
        "# Benchmark: the tick against a naive tick and the floor",
        "",
        "This page is written by `make bench` (`bench/tick_bench.py`); rerun it rather than editing the numbers.",
        "",
        f"Command: `{results.command}`",
        "",
        "## Conditions",
        "",
        "| | |",
        "|---|---|",
        *(f"| {label} | {value} |" for label, value in results.machine.items()),
        "",
        "The machine's cores are shared with other workloads, so single timings are noisy; compare the "
        "ratios within one run, whose ticks alternate, and the p10-p90 spread.",
        "",
        *_targets_section(results),
        *_tick_section(results),
        *_catch_up_section(results),
        *_floor_section(results),
        "## Method",
        "",
        METHOD_TEXT,
        "## Plans",
        "",
        "EXPLAIN (ANALYZE, BUFFERS) output; the statements inside the function are logged by auto_explain "
        "(log_nested_statements) from a run in a rolled-back transaction. LOCK TABLE has no plan and is not "
        f"listed. Literal arrays of more than {MAX_ARRAY_VALUES_SHOWN} values (the ids a custom plan inlines) "
        "are cut to their first values, with the count added after them.",
        "",
    ]
    for title, plan in results.plans.items():
        lines += [f"### {title}", "", "```text", plan.rstrip(), "```", ""]
    return "\n".join(lines)
