"""Time-driven session statuses for PostgreSQL, shipped as Alembic migrations.

The revisions create a ``sessions`` table, enable pg_cron, define
``advance_session_statuses()`` and schedule it as a pg_cron job.
"""

from __future__ import annotations

import os
from importlib import resources
from typing import TYPE_CHECKING

from session_status.errors import (
    ConfigurationError,
    PreflightError,
    PrivilegeError,
    SandboxError,
    SessionStatusError,
)
from session_status.pgcron import normalize_url

if TYPE_CHECKING:
    from alembic.config import Config

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "PreflightError",
    "PrivilegeError",
    "SandboxError",
    "SessionStatusError",
    "__version__",
    "database_url",
    "normalize_url",
    "script_location",
    "version_location",
]


def database_url(config: Config | None = None) -> str:
    """Return the database URL for a migration run, with the psycopg 3 driver.

    ``DATABASE_URL`` wins; otherwise ``sqlalchemy.url`` from ``config``.
    """
    url = os.environ.get("DATABASE_URL")
    if not url and config is not None:
        url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise ConfigurationError(
            "no database URL: set DATABASE_URL (e.g. postgresql://user@host/dbname) or sqlalchemy.url in alembic.ini"
        )
    return normalize_url(url)


def script_location() -> str:
    """Return the directory of this package's Alembic environment (env.py and versions/)."""
    return str(resources.files("session_status.migrations"))


def version_location() -> str:
    """Return the directory of this package's revisions, for a host app's ``version_locations``.

    Equivalent to ``session_status:migrations/versions`` in an installed
    wheel; this function also works in an editable install, where the
    revisions stay in the repository's ``migrations/versions``.
    """
    return str(resources.files("session_status.migrations") / "versions")
