"""The ``session-status`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime

from rich.console import Console

from session_status.errors import SessionStatusError
from session_status.pgcron import normalize_url

logger = logging.getLogger(__name__)


def _database_url(args: argparse.Namespace) -> str:
    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise SessionStatusError("no database: pass --database-url URL or set DATABASE_URL")
    return normalize_url(url)


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
    import sqlalchemy as sa

    from session_status.config import quote_identifier, validate_schema_name

    validate_schema_name(args.schema)
    function = f"{quote_identifier(args.schema)}.advance_session_statuses"
    engine = sa.create_engine(_database_url(args), poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        if args.as_of is None:
            row = conn.execute(sa.text(f"SELECT opened, completed FROM {function}()")).one()
        else:
            row = conn.execute(
                sa.text(f"SELECT opened, completed FROM {function}(:as_of)"), {"as_of": args.as_of}
            ).one()
    engine.dispose()
    console.print(f"opened {row.opened}, completed {row.completed}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="session-status", description=__doc__)
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
    tick.add_argument("--database-url", help="database to tick (default: $DATABASE_URL)")
    tick.add_argument("--schema", default="public", help="schema of the sessions table (default public)")
    tick.add_argument("--as-of", type=_parse_instant, help="instant to judge at, ISO 8601 with offset (default now)")
    tick.set_defaults(handler=_cmd_tick)
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
    except KeyboardInterrupt:
        error_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
