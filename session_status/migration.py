"""Helpers that the revisions in ``migrations/versions`` call.

A revision's SQL lives in ``session_status/sql/<revision>.<direction>.sql``
and is frozen with that revision. The files use ``{{name}}`` placeholders
for configured names, which :func:`render_sql` fills with quoted values.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.engine import Connection

from session_status import pgcron
from session_status.config import Settings, quote_literal
from session_status.errors import SessionStatusError

logger = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def load_sql(filename: str) -> str:
    """Return the text of a packaged SQL file."""
    return resources.files("session_status.sql").joinpath(filename).read_text(encoding="utf-8")


def render_sql(filename: str, settings: Settings) -> str:
    """Return a packaged SQL file with its placeholders filled in from ``settings``."""
    values = {
        "schema": settings.quoted_schema(),
        "schema_name": quote_literal(settings.schema),
        "row_level_security": "true" if settings.row_level_security else "false",
        "retention": quote_literal(settings.retention),
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise SessionStatusError(f"{filename} uses unknown placeholder {{{{{name}}}}}")
        return values[name]

    return _PLACEHOLDER.sub(replace, load_sql(filename))


def execute_sql_file(filename: str, settings: Settings | None = None) -> None:
    """Run a packaged SQL file through Alembic, online or as offline script output.

    Downgrade files find their objects in the catalog and take no settings.
    """
    execute_sql(render_sql(filename, settings or Settings()))


def execute_sql(sql: str) -> None:
    """Run SQL text through Alembic, online or as offline script output, with no bind parameters."""
    # text() would read ":name" as a bind parameter; escaped colons are sent verbatim.
    op.execute(sa.text(sql.replace(":", r"\:")))


def current_settings() -> Settings:
    return Settings.from_alembic()


def is_offline() -> bool:
    return context.is_offline_mode()


def connection() -> Connection:
    return op.get_bind()


def preflight(settings: Settings) -> tuple[pgcron.ServerInfo, Connection] | None:
    """Check the server and the grants before a revision changes anything.

    Returns what the server looks like and the connection to pg_cron's
    database, or None in offline mode, where there is no server to ask.
    """
    if is_offline():
        return None
    info = pgcron.probe(connection(), settings)
    pgcron.check_server(info)
    cron = pgcron.cron_connection(connection(), settings, info)
    pgcron.check_privileges(cron, info, cross_database=not info.same_database)
    pgcron.check_installed_version(cron)
    return info, cron


def schedule_job(settings: Settings, *, schedule: str, command: str, purpose: str = "") -> None:
    """Create or replace this database's pg_cron job ``purpose``, online or in the offline script.

    Online, the job is named :func:`pgcron.job_name` of the connected
    database and is scheduled in pg_cron's database, which may be another
    database of the server. Offline (``--sql``), the script computes the same
    name when it runs. It works only in pg_cron's own database and raises an
    error at apply time in any other.
    """
    if is_offline():
        execute_sql(pgcron.schedule_job_script(schedule=schedule, command=command, purpose=purpose))
        return
    checked = preflight(settings)
    assert checked is not None  # preflight returns None in offline mode only
    info, cron = checked
    pgcron.schedule_job(
        cron,
        name=pgcron.job_name(info.current_database, purpose),
        schedule=schedule,
        command=command,
        database=info.current_database,
        username=info.current_user,
        same_database=info.same_database,
    )


def unschedule_job(settings: Settings, *, purpose: str = "") -> None:
    """Remove this database's pg_cron job ``purpose`` if it exists, online or in the offline script."""
    if is_offline():
        execute_sql(pgcron.unschedule_job_script(purpose=purpose))
        return
    bind = connection()
    info = pgcron.probe(bind, settings)
    cron = pgcron.cron_connection(bind, settings, info)
    pgcron.unschedule_job(cron, name=pgcron.job_name(info.current_database, purpose), database=info.current_database)
