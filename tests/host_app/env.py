"""Alembic environment of the example host app.

``-x session_status_metadata=`` selects how autogenerate treats the tables
of session-status:

* ``merge`` (default): target_metadata also contains session-status's
  metadata, so its tables match the database;
* ``exclude``: session_status.schema.include_object hides them;
* ``ignore``: neither, which makes autogenerate propose dropping them.
"""

import os
from logging.config import fileConfig

import models
import sqlalchemy as sa
from alembic import context

from session_status import schema

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

mode = context.get_x_argument(as_dictionary=True).get("session_status_metadata", "merge")
if mode == "merge":
    target_metadata = [models.metadata, schema.metadata]
    include_object = None
elif mode == "exclude":
    target_metadata = models.metadata
    include_object = schema.include_object
elif mode == "ignore":
    target_metadata = models.metadata
    include_object = None
else:
    raise ValueError(f"invalid session_status_metadata {mode!r}: expected merge, exclude or ignore")

url = os.environ["DATABASE_URL"]


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, include_object=include_object)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
