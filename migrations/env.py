"""Alembic environment of session-status.

The database URL comes from ``DATABASE_URL`` when it is set, otherwise from
``sqlalchemy.url`` in alembic.ini. ``postgresql://`` and ``postgres://``
URLs are switched to the psycopg 3 driver.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlalchemy.engine import Engine

from session_status import database_url
from session_status.schema import metadata

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

logger = logging.getLogger("alembic.env")
target_metadata = metadata


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(config),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if isinstance(connectable, Engine):
        # pytest-alembic passes an engine rather than a connection.
        with connectable.connect() as connection:
            _run_with(connection)
        return
    if connectable is not None:
        # A caller (the tests, the demo) passed its own connection.
        _run_with(connectable)
        return

    section = config.get_section(config.config_ini_section, {})
    section["sqlalchemy.url"] = database_url(config)
    engine = engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run_with(connection)
    engine.dispose()


def _run_with(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
