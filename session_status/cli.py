"""The ``session-status`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from rich.console import Console
from rich.table import Table

from session_status.config import validate_schema_name
from session_status.database import database_url_from, to_conninfo
from session_status.errors import SessionStatusError

logger = logging.getLogger(__name__)


def _parse_instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid instant {text!r}: expected ISO 8601 with an offset, e.g. 2026-03-29T01:30:00+01:00"
        ) from None
    if instant.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"invalid instant {text!r}: it has no UTC offset; add one (e.g. +00:00) so it names one instant"
        )
    return instant


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from session_status.demo import run_demo

    return run_demo(console, wait_seconds=args.wait)


def _cmd_tick(args: argparse.Namespace, console: Console) -> int:
    from session_status.tick import run_tick

    validate_schema_name(args.schema)
    if args.as_of is not None and args.as_of > datetime.now(UTC) and not args.allow_future:
        raise SessionStatusError(
            f"--as-of {args.as_of.isoformat()} is in the future: the tick would open and complete sessions "
            "before their time, and completed is final. Pass --allow-future if that is intended."
        )
    result = run_tick(database_url_from(args.database_url), schema=args.schema, as_of=args.as_of)
    console.print(f"opened {result.opened}, completed {result.completed}")
    if result.transitions:
        table = Table(box=None)
        for column in ("id", "session", "from", "to", "due at", "late by"):
            table.add_column(column)
        for transition in result.transitions:
            table.add_row(
                str(transition.id),
                str(transition.session_id),
                transition.from_status,
                _styled_status(transition.to_status),
                f"{transition.due_at:%Y-%m-%d %H:%M:%S %z}",
                str(timedelta(seconds=round((transition.as_of - transition.due_at).total_seconds()))),
            )
        console.print(table)
    return 0


def _cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    from session_status.doctor import Level, exit_code, run_checks

    validate_schema_name(args.schema)
    checks = run_checks(
        database_url_from(args.database_url),
        schema=args.schema,
        cron_conninfo=_cron_conninfo(args),
        expected_schedule=args.expected_schedule,
        max_lag=timedelta(seconds=args.max_lag),
        version_table=args.version_table,
    )
    if args.json:
        print(json.dumps({"ok": exit_code(checks) == 0, "checks": [check.as_dict() for check in checks]}, indent=2))
        return exit_code(checks)
    colours = {Level.OK: "green", Level.WARN: "yellow", Level.FAIL: "bold red"}
    width = max(len(check.name) for check in checks)
    for check in checks:
        console.print(
            f"[{colours[check.level]}]{check.level.value:<4}[/] {check.name:<{width}}  {check.detail}",
            highlight=False,
            soft_wrap=True,
        )
        if check.fix:
            console.print(f"     {'':<{width}}  fix: {check.fix}", highlight=False, soft_wrap=True, style="dim")
    return exit_code(checks)


def _cmd_status(args: argparse.Namespace, console: Console) -> int:
    from session_status.status import collect_status

    validate_schema_name(args.schema)
    status = collect_status(
        database_url_from(args.database_url), schema=args.schema, cron_conninfo=_cron_conninfo(args), runs=args.runs
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(status), indent=2, default=str))
        return 0
    console.print(
        f"database {status.database!r}, schema {status.schema!r}, pg_cron database {status.cron_database!r}",
        highlight=False,
    )
    if status.cron_error:
        console.print(f"[yellow]cannot read pg_cron's tables: {status.cron_error}[/]", highlight=False)
    jobs = Table(title="pg_cron jobs", title_justify="left")
    for column in ("job", "id", "schedule", "active", "runs in"):
        jobs.add_column(column, overflow="fold")
    for job in status.jobs:
        if job.get("jobid") is None:
            jobs.add_row(job["jobname"], "[red]missing[/]", "", "", job["database"])
        else:
            active = "[green]yes[/]" if job["active"] else "[red]no[/]"
            jobs.add_row(job["jobname"], str(job["jobid"]), job["schedule"], active, job["database"])
    console.print(jobs)
    runs = Table(title=f"last {args.runs} runs", title_justify="left")
    for column in ("run", "job", "status", "started", "took", "message"):
        runs.add_column(column, overflow="fold")
    for run in status.runs:
        took = f"{(run['end_time'] - run['start_time']).total_seconds() * 1000:.0f} ms" if run["end_time"] else ""
        started = f"{run['start_time']:%Y-%m-%d %H:%M:%S %z}" if run["start_time"] else ""
        colour = {"succeeded": "green", "failed": "red"}.get(run["status"], "yellow")
        runs.add_row(
            str(run["runid"]),
            str(run["jobname"]),
            f"[{colour}]{run['status']}[/]",
            started,
            took,
            (run["return_message"] or "").strip(),
        )
    console.print(runs)
    sessions = Table(title="sessions", title_justify="left")
    sessions.add_column("status")
    sessions.add_column("stored", justify="right")
    sessions.add_column("by the clock now", justify="right")
    effective = status.effective_sessions or {}
    for name in ("scheduled", "open", "full", "completed", "cancelled"):
        by_clock = str(effective.get(name, 0)) if status.effective_sessions is not None else "-"
        sessions.add_row(_styled_status(name), str(status.sessions.get(name, 0)), by_clock)
    console.print(sessions)
    console.print(f"overdue transitions: {status.overdue}", highlight=False)
    if status.transitions_last_hour is not None:
        moves = ", ".join(f"{name}: {count}" for name, count in status.transitions_last_hour.items()) or "none"
        last_id = "none yet" if status.last_transition_id is None else status.last_transition_id
        console.print(f"transitions in the last hour: {moves} (last id {last_id})", highlight=False)
    return 0


def _cmd_listen(args: argparse.Namespace, console: Console) -> int:
    from session_status.listener import Listener

    listener = Listener(database_url_from(args.database_url), schema=args.schema, after_id=args.after_id)
    with listener:
        for transition in listener.transitions(idle_timeout=args.timeout, catch_up_only=args.once):
            if args.json:
                print(json.dumps(dataclasses.asdict(transition), default=str), flush=True)
            else:
                console.print(
                    f"{transition.id} session {transition.session_id}: {transition.from_status} -> "
                    f"{_styled_status(transition.to_status)} (due {transition.due_at:%Y-%m-%d %H:%M:%S %z}, "
                    f"applied {transition.applied_at:%Y-%m-%d %H:%M:%S %z})",
                    highlight=False,
                    soft_wrap=True,
                )
    return 0


def _styled_status(status: str) -> str:
    style = {"open": "green", "completed": "blue", "cancelled": "red", "full": "yellow"}.get(status)
    return f"[{style}]{status}[/]" if style else status


def _cron_conninfo(args: argparse.Namespace) -> str | None:
    return to_conninfo(args.cron_database_url) if args.cron_database_url else None


def _add_database_options(parser: argparse.ArgumentParser, *, cron: bool = False) -> None:
    parser.add_argument("--database-url", help="app database, a postgresql:// URL (default: $DATABASE_URL)")
    parser.add_argument("--schema", default="public", help="schema of the sessions table (default public)")
    if cron:
        parser.add_argument(
            "--cron-database-url",
            help="URL of pg_cron's database (default: the app URL with the database set to cron.database_name)",
        )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}: expected more than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="session-status",
        description="Run, inspect and follow the session-status automation in a PostgreSQL database.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="start a throwaway PostgreSQL with pg_cron, migrate it and watch the real job run"
    )
    demo.add_argument(
        "--wait", type=int, default=150, help="seconds to wait for the pg_cron job before giving up (default 150)"
    )
    demo.set_defaults(handler=_cmd_demo)

    tick = commands.add_parser("tick", help="run advance_session_statuses() once and print what changed")
    _add_database_options(tick)
    tick.add_argument(
        "--as-of",
        type=_parse_instant,
        help="instant to judge at, ISO 8601 with offset (default now); the changes are permanent and recorded "
        "in the history, so an instant later than now needs --allow-future",
    )
    tick.add_argument(
        "--allow-future",
        action="store_true",
        help="accept an --as-of later than now, completing sessions before they end",
    )
    tick.set_defaults(handler=_cmd_tick)

    doctor = commands.add_parser(
        "doctor", help="check pg_cron, the jobs, the launcher, the lag and the revisions; exit 1 on any FAIL"
    )
    _add_database_options(doctor, cron=True)
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument("--expected-schedule", help="warn unless the tick job runs on this schedule, e.g. '* * * * *'")
    doctor.add_argument(
        "--max-lag",
        type=_positive_seconds,
        default=120,
        help="seconds an overdue transition may wait before WARN; FAIL at ten times this (default 120)",
    )
    doctor.add_argument(
        "--version-table", default="alembic_version", help="Alembic's version table (default alembic_version)"
    )
    doctor.set_defaults(handler=_cmd_doctor)

    status = commands.add_parser(
        "status", help="show the jobs, their last runs, sessions per status and the last hour's transitions"
    )
    _add_database_options(status, cron=True)
    status.add_argument("--runs", type=int, default=5, help="number of recent job runs to show (default 5)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=_cmd_status)

    listen = commands.add_parser(
        "listen", help="print each transition as it commits, catching up from the history first"
    )
    _add_database_options(listen)
    listen.add_argument(
        "--after-id",
        type=int,
        help="start after this transition id; 0 prints the whole kept history (default: only new transitions)",
    )
    listen.add_argument("--once", action="store_true", help="print the transitions after --after-id and exit")
    listen.add_argument(
        "--timeout", type=_positive_seconds, help="exit after this many seconds without a new transition"
    )
    listen.add_argument("--json", action="store_true", help="print one JSON object per transition")
    listen.set_defaults(handler=_cmd_listen)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    error_console = Console(stderr=True)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s [%(name)s] %(message)s")
    try:
        return int(args.handler(args, console))
    except SessionStatusError as error:
        if args.verbose:
            error_console.print_exception()
        error_console.print(f"[bold red]error:[/] {error}", highlight=False)
        cause = error.__cause__
        while cause is not None:
            error_console.print(f"  caused by: {cause}", highlight=False)
            cause = cause.__cause__
        return 1
    except psycopg.Error as error:
        if args.verbose:
            error_console.print_exception()
        message = " ".join(str(error).split())
        error_console.print(f"[bold red]error:[/] {type(error).__name__}: {message}", highlight=False)
        return 1
    except KeyboardInterrupt:
        error_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
