"""pytest-alembic fixtures: our lineage on a fresh database of the session sandbox.

The revisions need pg_cron, so ``alembic_engine`` is an engine on the
per-test database (an app database whose jobs live in ``postgres``), not
pytest-alembic's default in-memory SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.config import Config

from session_status.sandbox import Sandbox
from tests import helpers


@pytest.fixture
def alembic_config(database_url: str) -> Config:
    return helpers.alembic_config(database_url)


@pytest.fixture
def alembic_engine(sandbox: Sandbox, database: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sandbox.url(database), poolclass=sa.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()
