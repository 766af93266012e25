"""Measure advance_session_statuses() against a naive tick and the floor.

    python -m bench.tick_bench [--sizes 10000,100000,1000000] [--repeat 15] [--output docs/benchmarks.md]

Starts a throwaway durable PostgreSQL with pg_cron. For each size it
creates a database migrated to head (without the pg_cron job) and loads the
sessions into the package's table and into a date/time/duration table. It
times ticks at one instant, with 0 and with ``--due`` sessions due. At the
largest size it also times a catch-up of ``--backlog`` transitions while a
second connection writes as an app does. Prints the results and writes them
to ``--output`` unless ``--no-write`` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from rich.console import Console

from bench import database, markdown, report, workloads
from bench.database import DueSet
from session_status.sandbox import Sandbox

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid sizes {text!r}: expected numbers separated by commas") from error
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError(f"invalid sizes {text!r}: expected positive numbers")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tick_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=[10_000, 100_000, 1_000_000],
        help="sessions per table, separated by commas (default: 10000,100000,1000000)",
    )
    parser.add_argument(
        "--repeat", type=int, default=15, help="timed repetitions of each tick per size and scenario (default: 15)"
    )
    parser.add_argument(
        "--due",
        type=int,
        default=200,
        help="sessions due in the busy scenario, half to open and half to complete (default: 200)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=100_000,
        help="transitions in the catch-up at the largest size; 0 skips it (default: 100000)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=10_000,
        help="max_transitions of the job batch ticks and batch_size of the catch-up CALL (default: 10000, "
        "the job's default)",
    )
    parser.add_argument(
        "--app-seconds",
        type=float,
        default=5.0,
        help="seconds of app writes alone, the baseline of the catch-up (default: 5)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="Markdown file for the results (default: docs/benchmarks.md)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"invalid --repeat {args.repeat}: expected 1 or more")
    if args.due < 2 or args.due > args.sizes[0]:
        parser.error(f"invalid --due {args.due}: expected 2 to {args.sizes[0]} (the smallest size)")
    if args.batch_size < 1:
        parser.error(f"invalid --batch-size {args.batch_size}: expected 1 or more")
    return args


class SizeRun:
    """The connections and state of one size's database."""

    def __init__(self, sandbox: Sandbox, dbname: str, as_of: datetime, due_set: DueSet) -> None:
        self.sandbox = sandbox
        self.dbname = dbname
        self.as_of = as_of
        self.due_set = due_set
        self.tick = sandbox.connect(dbname)
        self.job = sandbox.connect(dbname)
        self.admin = sandbox.connect(dbname)
        for conn in (self.tick, self.job, self.admin):
            conn.execute("SET TimeZone = 'UTC'")
        # pg_cron runs every job in a new session, where the first five
        # executions of each statement in the function get a custom plan (one
        # planned for the actual LIMIT). Forcing custom plans gives a warm
        # connection the plans that a pg_cron run gets.
        self.job.execute("SET plan_cache_mode = force_custom_plan")
        self.has_history = bool(
            self.admin.execute("SELECT to_regclass(%s) IS NOT NULL", (workloads.HISTORY_TABLE,)).fetchone()[0]  # type: ignore[index]
        )

    def close(self) -> None:
        self.tick.close()
        self.job.close()
        self.admin.close()

    def settle(self, table: str) -> None:
        """Remove the dead rows the last change left, outside the timed section.

        INDEX_CLEANUP ON: with few dead rows VACUUM would otherwise skip the
        indexes, and the idle tick would walk the dead entries of the partial indexes.
        """
        if table == "sessions" and self.has_history:
            self.admin.execute(f"DELETE FROM {workloads.HISTORY_TABLE}")  # type: ignore[arg-type]
            self.admin.execute(f"VACUUM (INDEX_CLEANUP ON) {workloads.HISTORY_TABLE}")  # type: ignore[arg-type]
        self.admin.execute(f"VACUUM (INDEX_CLEANUP ON) {table}")  # type: ignore[arg-type]

    def restore(self, table: str) -> None:
        database.restore_due_set(self.admin, self.due_set, naive=table == "sessions_naive")
        self.settle(table)


def _check(label: str, changed: int, expected: int) -> None:
    if changed != expected:
        raise RuntimeError(f"{label} changed {changed} sessions, expected {expected}")


def measure_size(
    sandbox: Sandbox, size: int, args: argparse.Namespace, console: Console
) -> tuple[report.SizeResult, SizeRun]:
    dbname = f"bench_{size}"
    started = time.monotonic()
    with console.status(f"{size:,} sessions: migrating and loading"):
        database.create_migrated_database(sandbox, dbname)
        with sandbox.connect(dbname) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            as_of, due_set = database.load_sessions(conn, size, args.due)
    result = report.SizeResult(size=size, due=len(due_set), load_seconds=time.monotonic() - started)
    console.print(f"{size:,} sessions loaded in {result.load_seconds:.1f} s")
    run = SizeRun(sandbox, dbname, as_of, due_set)

    floor = workloads.build_floor(run.tick, as_of, due_set, lambda: run.restore("sessions"))
    # build_floor() leaves the due set restored: one tick brings the table to its idle state.
    _check("the first tick", workloads.run_ours(run.tick, as_of), len(due_set))
    run.settle("sessions")
    result.floor = floor
    empty_floor = workloads.Floor.empty()

    # The job's batches run on their own connections, with the plans a
    # pg_cron run gets (see SizeRun).
    ticks: dict[tuple[str, str], Callable[[], int]] = {}
    for scenario in report.SCENARIOS:
        ticks[(scenario, "ours")] = lambda: workloads.run_ours(run.tick, as_of)
        ticks[(scenario, "job")] = lambda: workloads.run_job_batch(run.job, as_of, args.batch_size)
        ticks[(scenario, "floor")] = (
            (lambda: workloads.run_floor(run.tick, empty_floor))
            if scenario == "idle"
            else (lambda: workloads.run_floor(run.tick, floor))
        )
        ticks[(scenario, "naive")] = lambda: workloads.run_naive(run.tick, as_of)
    tables = {
        "ours": "sessions",
        "job": "sessions",
        "floor": "sessions",
        "naive": "sessions_naive",
    }
    result.timings = {key: [] for key in ticks}
    result.server_timings = {key: [] for key in ticks}

    # One untimed round first: plans cached, statements prepared, pages in memory.
    total = args.repeat + 1
    with console.status(f"{size:,} sessions: ticking") as status:
        for repetition in range(total):
            status.update(f"{size:,} sessions: round {repetition + 1} of {total}")
            for (scenario, method), tick in ticks.items():
                table = tables[method]
                if scenario == "due":
                    run.restore(table)
                server_before = workloads.server_milliseconds(run.admin, method)
                milliseconds, changed = workloads.time_call(tick)
                server = workloads.server_milliseconds(run.admin, method) - server_before
                _check(f"{method} {scenario} tick", changed, 0 if scenario == "idle" else len(due_set))
                if scenario == "due":
                    run.settle(table)
                if repetition > 0:
                    result.timings[(scenario, method)].append(milliseconds)
                    result.server_timings[(scenario, method)].append(server)
                if repetition > 0 and (scenario, method) == ("idle", "ours"):
                    result.back_to_back.append(_time_again(run, tick))
    return result, run


def _time_again(run: SizeRun, tick: Callable[[], int]) -> float:
    """Return the server time of ``tick`` run again at once, with the CPU caches the first run left warm."""
    server_before = workloads.server_milliseconds(run.admin, "ours")
    _check("ours idle tick, again", tick(), 0)
    return workloads.server_milliseconds(run.admin, "ours") - server_before


def collect_plans(run: SizeRun, size: int, batch_size: int) -> dict[str, str]:
    """Return the plans of our tick's statements, idle and busy, of a job batch, and of the naive tick."""
    plans: dict[str, str] = {}
    at = f"{size:,} sessions"
    due = len(run.due_set)

    def ours() -> None:
        workloads.run_ours(run.tick, run.as_of)

    def job() -> None:
        workloads.run_job_batch(run.job, run.as_of, batch_size)

    for label, plan in workloads.explain_function(run.tick, ours).items():
        plans[f"ours, idle, {at}: {label}"] = plan
    run.restore("sessions")
    for label, plan in workloads.explain_function(run.tick, ours).items():
        plans[f"ours, {due} due, {at}: {label}"] = plan
    run.settle("sessions")
    run.restore("sessions")
    for label, plan in workloads.explain_function(run.job, job).items():
        plans[f"job batch (max_transitions {batch_size:,}), {due} due, {at}: {label}"] = plan
    run.settle("sessions")
    run.restore("sessions_naive")
    plans[f"naive, {due} due, {at}: completing UPDATE"] = workloads.explain(
        run.tick, workloads.NAIVE_COMPLETE_SQL, (run.as_of,)
    )
    run.settle("sessions_naive")
    # The plans ran in rolled-back transactions: the due rows are restored, so tick once.
    _check("the tick after the plans", workloads.run_ours(run.tick, run.as_of), due)
    _check("the naive tick after the plans", workloads.run_naive(run.tick, run.as_of), due)
    run.settle("sessions")
    run.settle("sessions_naive")
    return plans


def run_benchmark(args: argparse.Namespace, console: Console) -> report.Results:
    """Start a throwaway durable server, run every measurement and stop the server."""
    with console.status("starting a throwaway durable PostgreSQL with pg_cron"):
        sandbox = database.start_server()
    try:
        return _run(args, console, sandbox)
    finally:
        sandbox.stop()


def _server_facts(sandbox: Sandbox) -> dict[str, str]:
    with sandbox.connect() as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        major = str(conn.execute("SHOW server_version_num").fetchone()[0])[:2]  # type: ignore[index]
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").fetchone()
        settings = {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("shared_buffers", "fsync", "synchronous_commit", "full_page_writes", "max_wal_size")
        }
    return report.machine_details(version, major, f"extension {row[0]}" if row else "not installed", settings)


def _run(args: argparse.Namespace, console: Console, sandbox: Sandbox) -> report.Results:
    results = report.Results(
        command=shlex.join([Path(sys.executable).name, "-m", "bench.tick_bench", *sys.argv[1:]]),
        machine={},
        repeat=args.repeat,
        batch_size=args.batch_size,
    )
    # The database of a size is dropped when the next one starts; the last
    # one stays for the plans and the catch-up.
    last_run: SizeRun | None = None
    for size in args.sizes:
        if last_run is not None:
            last_run.close()
            sandbox.drop_database(last_run.dbname)
        result, last_run = measure_size(sandbox, size, args, console)
        results.sizes.append(result)
    # pg_cron's extension version is read in the postgres database, where the first migration created it.
    results.machine = _server_facts(sandbox)
    assert last_run is not None
    try:
        with console.status("collecting plans"):
            results.plans = collect_plans(last_run, results.largest.size, args.batch_size)
        if args.backlog > 0:
            results.baseline, results.catch_up = catch_up(last_run, args, console, results.plans, results.largest.size)
    finally:
        last_run.close()
        sandbox.drop_database(last_run.dbname)
    results.machine["load average at end (1, 5, 15 min)"] = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    results.targets = report.evaluate_targets(results)
    return results


CATCH_UP_PLAN_TITLE = "job batch (max_transitions {batch_size:,}), catch-up backlog of {backlog:,}, {size:,} sessions"


def catch_up(
    run: SizeRun, args: argparse.Namespace, console: Console, plans: dict[str, str], size: int
) -> tuple[workloads.AppWrites, workloads.CatchUp]:
    """Time the app's writes alone, then the catch-up of a backlog under the same writes.

    Adds the plans of the function's first batch on the backlog to ``plans``.
    """
    conninfo = run.sandbox.conninfo(run.dbname)
    with console.status("catch-up: preparing the backlog"):
        backlog = workloads.prepare_backlog(run.admin, run.as_of, args.backlog)
        # The first batch, as a new session plans it, in a rolled-back transaction.
        with run.sandbox.connect(run.dbname) as fresh:
            fresh.execute("SET TimeZone = 'UTC'")
            batch = workloads.explain_function(
                fresh, lambda: workloads.run_job_batch(fresh, run.as_of, args.batch_size)
            )
        title = CATCH_UP_PLAN_TITLE.format(batch_size=args.batch_size, backlog=backlog, size=size)
        for label, plan in batch.items():
            plans[f"{title}: {label}"] = plan
        # VACUUM without ANALYZE, so that the timed run plans with the same statistics.
        run.admin.execute("VACUUM sessions")
        run.admin.execute("CHECKPOINT")
    with console.status(f"catch-up: app writes alone for {args.app_seconds:g} s"):
        baseline = workloads.measure_app_writes(conninfo, args.app_seconds)
    with console.status(f"catch-up: {backlog:,} transitions with app writes"):
        outcome = workloads.run_catch_up(conninfo, run.as_of, backlog, args.batch_size)
    if outcome.changed != backlog:
        raise RuntimeError(f"the catch-up changed {outcome.changed} of {backlog} sessions")
    return baseline, outcome


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Wide enough for the tables when the output goes to a file or a pipe.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    results = run_benchmark(args, console)
    report.print_results(console, results)
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(markdown.render(results), encoding="utf-8")
        console.print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
