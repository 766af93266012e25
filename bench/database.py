"""Set-up of the benchmark databases: server, migration and bulk load.

Every database gets the package's revisions up to head, without the pg_cron
job, and two copies of the same sessions: ``sessions`` (the package's table)
and ``sessions_naive``, the date/time/duration layout that the naive tick
runs against.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import psycopg
from alembic import command
from alembic.config import Config

from session_status import script_location
from session_status.inspect import HISTORY_RETENTION_PURPOSE, RUN_DETAILS_RETENTION_PURPOSE
from session_status.pgcron import job_name
from session_status.sandbox import Sandbox

logger = logging.getLogger(__name__)

# Settings of the benchmark's own server. Durable (fsync on) so that commits
# cost what they cost in production; buffers large enough to keep 1M rows of
# both tables cached; checkpoints spaced out so none starts in a timed section
# unless the WAL grows past max_wal_size. work_mem stays at its default
# (4MB): it decides the join method of the function's UPDATE. pg_stat_statements reports the
# server execution time of each timed statement.
SERVER_SETTINGS = {
    "shared_preload_libraries": "'pg_cron,pg_stat_statements'",
    "pg_stat_statements.track": "top",
    "shared_buffers": "'1GB'",
    "max_wal_size": "'8GB'",
    "checkpoint_timeout": "'30min'",
    "maintenance_work_mem": "'256MB'",
}

# The share of sessions whose time lies in the future of the reference
# instant: the load spreads starts over 730 days, 584 before and 146 after.
DAYS_BEFORE = 584
DAYS_AFTER = 146

# The purposes of the package's pg_cron jobs: the tick and the two retention jobs.
JOB_PURPOSES = ("", HISTORY_RETENTION_PURPOSE, RUN_DETAILS_RETENTION_PURPOSE)


def start_server() -> Sandbox:
    """Start the throwaway server the demo uses, durable and with larger buffers."""
    return Sandbox(cron_database="postgres", durable=True, settings=SERVER_SETTINGS).start()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location())
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    return config


def create_migrated_database(sandbox: Sandbox, dbname: str) -> None:
    """Create ``dbname``, migrate it to head and remove the package's pg_cron jobs for it.

    The jobs would otherwise run in the middle of the measurements: the
    benchmark calls the function itself with an explicit as_of. They are
    removed by name, because the run-details retention job runs in pg_cron's
    database, not in ``dbname``. Also creates pg_stat_statements in ``dbname``.
    """
    sandbox.drop_database(dbname)
    sandbox.create_database(dbname)
    command.upgrade(alembic_config(sandbox.url(dbname)), "head")
    with sandbox.connect(dbname) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    removed = remove_jobs(sandbox, dbname)
    logger.info("removed the pg_cron jobs of database %r: %s", dbname, removed)


def remove_jobs(sandbox: Sandbox, dbname: str) -> list[tuple[str, str]]:
    """Unschedule the package's pg_cron jobs for ``dbname``; return (job name, database it ran in) of each.

    Does nothing when pg_cron is not installed in pg_cron's database.
    """
    names = [job_name(dbname, purpose) for purpose in JOB_PURPOSES]
    with sandbox.connect(sandbox.cron_database) as cron:
        if cron.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone() is None:
            return []
        rows = cron.execute(
            "SELECT jobname, database, cron.unschedule(jobid) FROM cron.job WHERE jobname = ANY(%s) ORDER BY jobid",
            (names,),
        ).fetchall()
    return [(str(name), str(database)) for name, database, _ in rows]


@dataclass(frozen=True)
class DueSet:
    """The sessions that fall due at the reference instant, by the transition they make."""

    to_open: list[int]
    to_complete: list[int]

    @property
    def ids(self) -> list[int]:
        return self.to_open + self.to_complete

    def __len__(self) -> int:
        return len(self.to_open) + len(self.to_complete)


# One INSERT generates every session. Row i is one of the due rows when
# i is a multiple of the stride, so the due rows are spread over the whole
# heap as rows created over two years would be. All other rows are loaded in
# the status they have at the reference instant %(as_of)s, so nothing else
# is due then: past sessions are completed or cancelled, running ones open
# or full, future ones scheduled, full or cancelled. The due rows are loaded
# in the status they have after the tick; restore_due_set() puts them back.
_LOAD_SESSIONS = f"""
INSERT INTO sessions (id, title, capacity, starts_at, ends_at, status, status_changed_at, created_at)
SELECT i, 'Session ' || i, 8 + i %% 25, starts_at, ends_at, status, changed_at, starts_at - interval '30 days'
FROM (
    SELECT i, starts_at, ends_at,
           CASE
               WHEN due_kind = 1 THEN 'completed'
               WHEN due_kind = 2 THEN 'open'
               WHEN ends_at <= %(as_of)s THEN CASE WHEN r_status < 0.07 THEN 'cancelled' ELSE 'completed' END
               WHEN starts_at <= %(as_of)s THEN CASE WHEN r_status < 0.10 THEN 'full' ELSE 'open' END
               WHEN r_status < 0.05 THEN 'cancelled'
               WHEN r_status < 0.10 THEN 'full'
               ELSE 'scheduled'
           END AS status,
           least(starts_at, %(as_of)s) AS changed_at
    FROM (
        SELECT i, due_kind, r_status,
               CASE due_kind
                   -- ended in the last 50 minutes: loaded completed, restored as open
                   WHEN 1 THEN %(as_of)s - (61 + i %% 50) * interval '1 minute'
                   -- started in the last 50 minutes: loaded open, restored as scheduled
                   WHEN 2 THEN %(as_of)s - (1 + i %% 50) * interval '1 minute'
                   ELSE date_trunc('minute', %(as_of)s - interval '{DAYS_BEFORE} days'
                                             + r_when * interval '{DAYS_BEFORE + DAYS_AFTER} days')
               END AS starts_at,
               CASE due_kind
                   WHEN 1 THEN %(as_of)s - (1 + i %% 50) * interval '1 minute'
                   WHEN 2 THEN %(as_of)s + (10 + i %% 50) * interval '1 minute'
                   ELSE NULL
               END AS due_ends_at,
               (30 + 15 * floor(r_minutes * 7)) * interval '1 minute' AS duration
        FROM (
            SELECT i, random() AS r_when, random() AS r_status, random() AS r_minutes,
                   CASE
                       WHEN %(stride)s > 0 AND i %% %(stride)s = 0 AND i / %(stride)s <= %(due)s
                           THEN 1 + (i / %(stride)s) %% 2
                       ELSE 0
                   END AS due_kind
            FROM generate_series(1, %(n)s) AS i
        ) AS drawn
    ) AS timed
    CROSS JOIN LATERAL (SELECT coalesce(due_ends_at, starts_at + duration) AS ends_at) AS e
) AS rows
"""

# The layout that ticks with string concatenation: local date, local time and
# a duration in minutes, with the indexes such an app typically has (the
# primary key and the calendar's (session_date, start_time)). UTC throughout.
_CREATE_NAIVE = """
CREATE TABLE sessions_naive (
    id           bigint PRIMARY KEY,
    title        text,
    capacity     integer,
    session_date date NOT NULL,
    start_time   time NOT NULL,
    duration     integer NOT NULL,
    status       text NOT NULL DEFAULT 'scheduled'
);
CREATE INDEX sessions_naive_date_idx ON sessions_naive (session_date, start_time);
"""

_LOAD_NAIVE = """
INSERT INTO sessions_naive (id, title, capacity, session_date, start_time, duration, status)
SELECT id, title, capacity,
       (starts_at AT TIME ZONE 'UTC')::date,
       (starts_at AT TIME ZONE 'UTC')::time,
       (extract(epoch FROM ends_at - starts_at) / 60)::integer,
       status
FROM sessions
ORDER BY id
"""


def load_sessions(conn: psycopg.Connection, n: int, due: int, *, seed: float = 0.42) -> tuple[datetime, DueSet]:
    """Load ``n`` sessions into both tables; return the reference instant and the due set.

    The reference instant is the start of the current minute; the benchmark
    ticks at that instant, where exactly the ``due`` rows of the due set are
    due once restore_due_set() has run, and none before.
    """
    if due > n:
        raise ValueError(f"invalid due count {due}: larger than the {n} sessions loaded")
    as_of = conn.execute("SELECT date_trunc('minute', now())").fetchone()[0]  # type: ignore[index]
    stride = n // due if due else 0
    with conn.transaction():
        conn.execute("SELECT setseed(%s)", (seed,))
        conn.execute(_LOAD_SESSIONS, {"as_of": as_of, "n": n, "stride": stride, "due": due})  # type: ignore[arg-type]
        conn.execute("SELECT setval(pg_get_serial_sequence('sessions', 'id'), %s)", (n,))
        conn.execute(_CREATE_NAIVE)  # type: ignore[arg-type]
        conn.execute(_LOAD_NAIVE)  # type: ignore[arg-type]
        # Autovacuum would start at random moments inside the timed sections;
        # the benchmark vacuums both tables itself between repetitions.
        for table in ("sessions", "sessions_naive"):
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")  # type: ignore[arg-type]
    conn.execute("VACUUM (ANALYZE) sessions")
    conn.execute("VACUUM (ANALYZE) sessions_naive")

    rows = (
        conn.execute(
            "SELECT id, status FROM sessions WHERE id %% %s = 0 AND id / %s <= %s ORDER BY id",
            (max(stride, 1), max(stride, 1), due),
        ).fetchall()
        if due
        else []
    )
    due_set = DueSet(
        to_open=[int(i) for i, status in rows if status == "open"],
        to_complete=[int(i) for i, status in rows if status == "completed"],
    )
    if len(due_set) != due:
        raise RuntimeError(f"the load produced {len(due_set)} due sessions instead of {due}")
    return as_of, due_set


def restore_due_set(conn: psycopg.Connection, due_set: DueSet, *, naive: bool) -> None:
    """Put the due rows back in their status before the tick, in one table.

    session_replication_role = replica keeps the status guard from firing:
    it would reject open -> scheduled, which only a tick in reverse needs.
    Any trigger that writes a transition history is skipped the same way.
    """
    table = "sessions_naive" if naive else "sessions"
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            f"UPDATE {table} SET status = 'scheduled' WHERE id = ANY(%s)",  # type: ignore[arg-type]
            (due_set.to_open,),
        )
        conn.execute(
            f"UPDATE {table} SET status = 'open' WHERE id = ANY(%s)",  # type: ignore[arg-type]
            (due_set.to_complete,),
        )
