"""``session-status demo``: the whole automation on a throwaway server.

Starts a sandbox PostgreSQL with pg_cron, migrates an app database to head,
inserts sessions that fall due before the next pg_cron tick, waits for the
real job to run, and shows the sessions before and after together with the
job's run record. The server is stopped and deleted at the end.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from rich.console import Console
from rich.live import Live
from rich.table import Table

from session_status import script_location
from session_status.pgcron import job_name
from session_status.sandbox import Sandbox

APP_DATABASE = "session_status_demo"


def alembic_config(url: str) -> Config:
    """Return an Alembic config that runs the installed revisions against ``url``."""
    config = Config()
    config.set_main_option("script_location", script_location())
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    return config


def _sessions_table(title: str, rows: list[tuple[Any, ...]]) -> Table:
    table = Table(title=title)
    for column in ("id", "title", "starts_at (UTC)", "ends_at (UTC)", "status"):
        table.add_column(column)
    for row in rows:
        status = str(row[4])
        style = {"open": "green", "completed": "blue", "cancelled": "red", "full": "yellow"}.get(status, "")
        table.add_row(
            str(row[0]),
            str(row[1]),
            f"{row[2]:%Y-%m-%d %H:%M:%S}",
            f"{row[3]:%Y-%m-%d %H:%M:%S}",
            f"[{style}]{status}[/]" if style else status,
        )
    return table


def _insert_sessions(conn: psycopg.Connection) -> datetime:
    now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    next_tick = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    # Everything below falls due before the next tick, however close it is.
    soon = now + (next_tick - now) / 2
    rows = [
        ("Yoga, starts before the next tick", soon, now + timedelta(hours=1), "scheduled"),
        ("Pottery, already running", now - timedelta(minutes=30), now + timedelta(hours=1), "scheduled"),
        ("Spin class, full, ends before the next tick", now - timedelta(hours=1), soon, "full"),
        ("Missed while the job was down", now - timedelta(hours=3), now - timedelta(hours=2), "scheduled"),
        ("Cancelled, never touched", now - timedelta(minutes=10), now + timedelta(hours=1), "cancelled"),
        ("Tomorrow, stays scheduled", now + timedelta(days=1), now + timedelta(days=1, hours=1), "scheduled"),
    ]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO sessions (title, starts_at, ends_at, status) VALUES (%s, %s, %s, %s)", rows)
    return now


def _read_sessions(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT id, title, starts_at, ends_at, status FROM sessions ORDER BY id").fetchall()


def _wait_for_run(
    console: Console, cron_conn: psycopg.Connection, jobid: int, since: datetime, wait_seconds: int
) -> tuple[Any, ...] | None:
    deadline = time.monotonic() + wait_seconds
    query = (
        "SELECT runid, status, return_message, start_time, end_time FROM cron.job_run_details "
        "WHERE jobid = %s AND start_time >= %s AND status IN ('succeeded', 'failed') ORDER BY runid LIMIT 1"
    )
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        while time.monotonic() < deadline:
            run = cron_conn.execute(query, (jobid, since)).fetchone()
            if run is not None:
                return tuple(run)
            now = datetime.now(UTC)
            next_tick = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
            remaining = math.ceil((next_tick - now).total_seconds())
            live.update(f"waiting for the pg_cron job: next tick in [bold]{remaining:2d} s[/] (schedule * * * * *)")
            time.sleep(0.5)
    return None


def run_demo(console: Console, *, wait_seconds: int = 150) -> int:
    """Run the demo and return the process exit code: 0 when the job opened a session."""
    with console.status("starting a throwaway PostgreSQL with pg_cron"):
        sandbox = Sandbox(cron_database="postgres").start()
    try:
        with sandbox.connect() as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        console.print(
            f"PostgreSQL {version} on {sandbox.host}:{sandbox.port}, pg_cron preloaded, "
            f"cron.database_name = {sandbox.cron_database}"
        )
        sandbox.create_database(APP_DATABASE)
        url = sandbox.url(APP_DATABASE)
        console.print(f"$ DATABASE_URL={url} alembic upgrade head")
        command.upgrade(alembic_config(url), "head")

        with sandbox.connect("postgres") as cron_conn, sandbox.connect(APP_DATABASE) as app_conn:
            app_conn.execute("SET TimeZone = 'UTC'")
            name = job_name(APP_DATABASE)
            job = cron_conn.execute(
                "SELECT jobid, schedule, command FROM cron.job WHERE jobname = %s", (name,)
            ).fetchone()
            if job is None:
                console.print(f"[red]the upgrade did not schedule the job {name!r}[/]")
                return 1
            console.print(f"pg_cron job {name!r} (id {job[0]}): {job[1]!r} runs {job[2]}")

            inserted_at = _insert_sessions(app_conn)
            before = _read_sessions(app_conn)
            console.print(_sessions_table("sessions before the tick", before))

            run = _wait_for_run(console, cron_conn, int(job[0]), inserted_at, wait_seconds)
            after = _read_sessions(app_conn)
            console.print(_sessions_table("sessions after the pg_cron tick", after))
            if run is None:
                console.print(f"[red]the pg_cron job did not run within {wait_seconds} s[/]")
                return 1
            started = run[3].astimezone(UTC)
            took_ms = (run[4] - run[3]).total_seconds() * 1000
            console.print(
                f"cron.job_run_details: run {run[0]} {run[1]} ({run[2]}), "
                f"started {started:%H:%M:%S.%f} UTC, took {took_ms:.0f} ms"
            )
            opened = sum(1 for old, new in zip(before, after, strict=True) if old[4] != "open" and new[4] == "open")
            if run[1] != "succeeded" or opened == 0:
                console.print("[red]the job ran but opened no session[/]")
                return 1
            console.print(f"[green]the pg_cron job opened {opened} session(s) and completed the ones that ended[/]")
            return 0
    finally:
        with console.status("stopping the server"):
            sandbox.stop()
        console.print("server stopped and its files deleted")
