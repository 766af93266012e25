"""Connection strings for the command line and the listener, which use psycopg directly."""

from __future__ import annotations

import os

from psycopg.conninfo import make_conninfo

from session_status.errors import ConfigurationError

_DRIVER_PREFIXES = ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres+psycopg://")


def to_conninfo(url: str) -> str:
    """Return a libpq connection string for ``url``.

    Accepts libpq URLs (``postgresql://``, ``postgres://``), SQLAlchemy URLs
    that name a driver (``postgresql+psycopg://``) and ``key=value`` strings.
    """
    for prefix in _DRIVER_PREFIXES:
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def database_url_from(value: str | None) -> str:
    """Return ``value`` or ``$DATABASE_URL`` as a libpq connection string."""
    url = value or os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigurationError("no database: pass --database-url URL or set DATABASE_URL")
    return to_conninfo(url)


def with_database(conninfo: str, dbname: str) -> str:
    """Return ``conninfo`` pointed at database ``dbname`` on the same server, as the same user."""
    return make_conninfo(conninfo, dbname=dbname)
