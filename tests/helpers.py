"""Shared helpers of the test suite: running Alembic and reading the catalog."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

REPO = Path(__file__).resolve().parent.parent
ALEMBIC_INI = REPO / "alembic.ini"


def our_revisions() -> list[str]:
    """Return this package's revision ids from base to head."""
    script = ScriptDirectory.from_config(alembic_config("postgresql+psycopg:///unused"))
    return [rev.revision for rev in reversed(list(script.walk_revisions("base", "heads")))]


def our_head() -> str:
    """Return the head revision of this package's lineage."""
    return our_revisions()[-1]


def alembic_config(url: str, x: Mapping[str, str] | None = None) -> Config:
    """Return the repository's Alembic config pointed at ``url``, with ``-x`` arguments."""
    options = argparse.Namespace(x=[f"{key}={value}" for key, value in (x or {}).items()])
    config = Config(str(ALEMBIC_INI), cmd_opts=options)
    # Config values go through ConfigParser interpolation, where % is written %%.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str, target: str = "head", **x: str) -> None:
    command.upgrade(alembic_config(url, x), target)


def downgrade(url: str, target: str, **x: str) -> None:
    command.downgrade(alembic_config(url, x), target)


def stamp(url: str, target: str) -> None:
    command.stamp(alembic_config(url), target)


def run_alembic_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``alembic`` command with ``DATABASE_URL`` set, as a deploy would."""
    env = dict(os.environ, DATABASE_URL=url)
    alembic = Path(sys.executable).with_name("alembic")
    return subprocess.run(
        [str(alembic), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )


# Objects of every kind that a revision may create, as comparable tuples.
_CATALOG_QUERIES = {
    "relation": """
        SELECT n.nspname, c.relname, c.relkind::text, coalesce(c.relacl::text, ''),
               c.relrowsecurity::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'cron')
          AND c.relname NOT LIKE 'alembic_version%'
    """,
    "routine": """
        SELECT n.nspname, p.oid::regprocedure::text, coalesce(p.proacl::text, ''),
               coalesce(p.proconfig::text, '')
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'cron')
    """,
    "trigger": """
        SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal
    """,
    "schema": """
        SELECT nspname, coalesce(nspacl::text, '') FROM pg_namespace
        WHERE nspname NOT LIKE 'pg_%' AND nspname NOT IN ('information_schema', 'cron')
    """,
    "constraint": """
        SELECT conrelid::regclass::text, conname FROM pg_constraint c
        JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'cron')
          AND c.conrelid <> coalesce(to_regclass('alembic_version'), 0)
    """,
    "extension": "SELECT extname, extversion FROM pg_extension",
}


def catalog_snapshot(conn: psycopg.Connection) -> set[tuple[str, ...]]:
    """Return every user-visible object of the connected database, alembic_version excepted."""
    objects: set[tuple[str, ...]] = set()
    for kind, query in _CATALOG_QUERIES.items():
        for row in conn.execute(query):
            objects.add((kind, *map(str, row)))
    return objects


def jobs_for(cron_conn: psycopg.Connection, database: str) -> list[tuple[str, str, str]]:
    """Return (jobname, schedule, command) of the pg_cron jobs that run in ``database``."""
    rows = cron_conn.execute(
        "SELECT jobname, schedule, command FROM cron.job WHERE database = %s ORDER BY jobid", (database,)
    ).fetchall()
    return [tuple(row) for row in rows]
