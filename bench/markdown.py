"""Markdown rendering of the results, written to docs/benchmarks.md."""

from __future__ import annotations

from bench.report import (
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

METHOD_TEXT = """\
Each size gets its own database, migrated to head with the package's
revisions; the pg_cron job is unscheduled so that only the benchmark ticks.
One `INSERT ... SELECT FROM generate_series` loads the sessions, with starts
spread at random over two years around the reference instant (584 days
before, 146 after) and durations of 30 to 120 minutes. Past sessions are
completed (93 %) or cancelled, running ones open or full, future ones
scheduled (90 %), full or cancelled. The same rows are copied into
`sessions_naive` (`session_date date`, `start_time time`, `duration int`
minutes, indexed by primary key and `(session_date, start_time)`).

All ticks judge at the same instant, the start of the minute of the load:

- **ours**: `SELECT * FROM advance_session_statuses(as_of, NULL)`.
- **job batch**: `advance_session_statuses(as_of, batch_size)`, the call
  each batch of the pg_cron job makes, with the plans a pg_cron run gets.
- **candidate batch**: the same call to the rewrite in
  `bench/candidate.sql`, which the benchmark creates in the schema
  `bench_candidate` of its databases (not a migration).
- **naive**: in one transaction,
  `UPDATE sessions_naive SET status = 'completed' WHERE status IN (...) AND
  (session_date || ' ' || start_time)::timestamp + (duration || ' minutes')::interval <= as_of`
  and `UPDATE ... SET status = 'open' WHERE status = 'scheduled' AND
  (session_date || ' ' || start_time)::timestamp <= as_of`. The instant is a
  parameter instead of `now()` so that both ticks see the same due rows; the
  plan is the same full scan either way.
- **floor**: one `UPDATE sessions ... FROM unnest(ids, statuses)` of exactly
  the due rows, by primary key, from a list computed in advance. The status
  guard trigger fires for it as for our tick. If the schema has a
  `session_status_transitions` table that our tick fills and a plain UPDATE
  does not, the floor inserts the same rows in the same statement.

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
for the baseline. Then the same backlog is restored and cleared by the
candidate's procedure, under the same app writes.
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
        "- **ours**: `advance_session_statuses(as_of, NULL)` on a warm connection.",
        f"- **job batch**: `advance_session_statuses(as_of, {results.batch_size})`, the call of each batch of "
        "the pg_cron job, with `plan_cache_mode = force_custom_plan`. pg_cron runs each job in a new session, "
        "where the function's statements are planned for the actual LIMIT on their first five executions.",
        "- **candidate batch**: the same call to the rewrite in `bench/candidate.sql`, also with custom plans.",
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

    candidate = results.candidate_catch_up
    if candidate is not None:
        lines += [
            f"The same backlog through the candidate procedure (`bench/candidate.sql`): {candidate.changed:,} "
            f"transitions in {candidate.seconds:.2f} s, **{candidate.changed / candidate.seconds:,.0f} "
            "transitions/s**.",
            "",
        ]
    lines += [
        "App writes, milliseconds:",
        "",
        "| | n | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|",
    ]

    rows = [("alone", results.baseline), ("during the catch-up", catch_up.app)]
    if candidate is not None:
        rows.append(("during the candidate's catch-up", candidate.app))
    for label, writes in rows:
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


def job_batch_join(results: Results, *, catch_up: bool = False) -> str:
    """Return the join node of a job batch's completing pass ("Hash Join", ...), or "" without a plan.

    The batch is the one with ``--due`` rows, or with ``catch_up`` the first batch of the catch-up.
    """
    for title, plan in results.plans.items():
        if not (title.startswith("job batch") and title.endswith("completing pass")):
            continue
        if ("catch-up" in title) == catch_up:
            for node in ("Hash Join", "Merge Join", "Nested Loop"):
                if node in plan:
                    return node
    return ""


def miss_note(key: str, results: Results) -> str:
    """Return why the target ``key`` can miss and what would close the gap, with this run's numbers."""
    largest = results.largest
    size = f"{largest.size:,}"
    if key == "idle":
        return (
            "An idle tick is two index probes that find nothing (a few buffer hits each, see the plans), so "
            f"its time is the fixed cost of a function call: {_median(results, 'idle', 'ours')} ms on the "
            f"server, {_median(results, 'idle', 'ours', server=False)} ms end to end, where an empty UPDATE "
            f"already takes {_median(results, 'idle', 'floor', server=False)} ms. The naive tick's full scan "
            "grows with the table, so the ratio does too; a table smaller than the goal's 1M sessions, or a "
            "busy machine, gives a smaller one. Run again at once, with warm CPU caches, the idle tick takes "
            f"{format_ms(Summary.of(largest.back_to_back).median) if largest.back_to_back else '-'} ms."
        )
    if key == "due":
        bound = largest.ratio("due", "naive", "floor", server=True)
        return (
            f"No tick can beat the floor, and here naive / floor is only {format_ratio(bound)}. Changing "
            f"{largest.due} rows costs {_median(results, 'due', 'floor')} ms on the server, for the guard "
            "trigger, a new row version and new index entries per row. This CPU scans the naive table's "
            f"{size} cached rows in {_median(results, 'due', 'naive')} ms. Our tick is within "
            f"{format_ratio(largest.ratio('due', 'ours', 'floor', server=True))} of the floor, so the gap is "
            "in the goal, not in the tick: the floor is the cost of the row changes themselves. The ratio "
            "grows with a larger or uncached naive table, whose full scan takes longer."
        )
    join = job_batch_join(results)
    if key == "job" and join == "Nested Loop":
        return "The job batch found its rows by primary key in this run, so the floor limits it as it limits ours."
    if key == "job":
        return (
            "The pg_cron job calls the function with max_transitions = batch_size. With that LIMIT the "
            f"planner estimates a full batch of due rows and joins them to the table with a {join or 'join'} "
            "that reads every row of sessions (see the job batch plan below). The join method depends on "
            "work_mem: a Hash Join over a Seq Scan with 64MB, a Merge Join over the whole primary key index "
            "with the default 4MB. So whenever anything is due, a batch costs a full scan: "
            f"{_median(results, 'due', 'job')} ms. The "
            "candidate in bench/candidate.sql finds the locked rows by primary key "
            "(`WHERE s.id = ANY (ARRAY(SELECT ... FOR UPDATE SKIP LOCKED))`) and takes "
            f"{_median(results, 'due', 'candidate')} ms for the same batch. That change needs a new revision."
        )
    if key == "floor":
        return (
            "Our tick does more per due row than the floor: it finds the rows in the partial index and "
            "locks them with FOR UPDATE (one more write per row) before it updates them. If its plan joins "
            "the locked rows to all of sessions, the candidate in bench/candidate.sql avoids that join."
        )
    if key == "growth":
        return (
            "An idle tick's index probes grow with the index depth only (one more level from 10k to 1M). "
            "The timed idle ticks follow full scans and VACUUMs of the larger tables, so their growth is "
            "mostly CPU cache misses: compare the idle tick run again at once, under Tick time."
        )
    if key == "catch_up":
        join = job_batch_join(results, catch_up=True)
        candidate = results.candidate_catch_up
        measured = (
            f" In this run the candidate cleared the same backlog at "
            f"{candidate.changed / candidate.seconds:,.0f} transitions/s."
            if candidate is not None and candidate.seconds > 0
            else ""
        )
        if join == "Nested Loop":
            plan = (
                "In this run the first batch found its rows by primary key (see the catch-up batch plan), so "
                "the time went into the rows themselves: locking, updating and the guard trigger per row, and "
                "a WAL flush per batch."
            )
        else:
            plan = (
                f"In this run the first batch joined its {results.batch_size:,} locked rows to all {size} "
                f"sessions with a {join or 'join'} (see the catch-up batch plan), so each batch costs a full "
                "scan and the rate falls as the table grows."
            )
        return (
            "The installed function leaves the join between its locked rows and sessions to the planner, "
            "which picks it from the statistics and work_mem. "
            f"{plan} The candidate in bench/candidate.sql finds the locked rows by primary key in every "
            f"plan.{measured} That change needs a new revision."
        )
    if key == "app_p99":
        return (
            "The app's writes compete with the catch-up for WAL flushes and for the CPU. Smaller batches "
            "shorten each flush; a pause between batches would bound the catch-up's share."
        )
    return ""


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


def _floor_section(results: Results) -> list[str]:
    floor = results.largest.floor
    if floor is None:
        return []

    def writes(table: dict[str, tuple[int, int, int]]) -> str:
        return ", ".join(
            f"`{name}` {i} inserted, {u} updated, {d} deleted" for name, (i, u, d) in sorted(table.items())
        )

    return [
        "## Floor check",
        "",
        f"Transition history: {floor.history_mode}. Rows written by one busy tick, from "
        "`pg_stat_xact_user_tables` in a rolled-back trial run:",
        "",
        f"- ours: {writes(floor.writes_ours) or 'none'}",
        f"- floor: {writes(floor.writes_floor) or 'none'}",
        "",
        "The floor writes the same rows as our tick."
        if floor.mirrors_ours
        else "**The floor does not write the same rows as our tick**; its ratio is not a fair bound.",
        "",
    ]


def render(results: Results) -> str:
    """Return docs/benchmarks.md for ``results``."""
    lines = [
        "# Benchmark: the tick's cost follows the due work",
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
        "(log_nested_statements) from a run in a rolled-back transaction.",
        "",
    ]
    for title, plan in results.plans.items():
        lines += [f"### {title}", "", "```text", plan.rstrip(), "```", ""]
    return "\n".join(lines)
