"""Each downgrade removes what its upgrade created, including what pytest-alembic does not compare.

pytest-alembic compares tables, columns and indexes. This check adds
functions, procedures, triggers, grants, row-level security, comments and
the pg_cron jobs in the cron database.
"""

from __future__ import annotations

import itertools

import psycopg
import pytest

from session_status.sandbox import Sandbox
from tests import catalog, helpers

REVISIONS = ["base", *helpers.our_revisions()]
STEPS = list(itertools.pairwise(REVISIONS))
# Revisions that leave this test's database as it was: 0002 creates the
# extension in the cron database ("postgres"), and 0007 revokes grants that
# only default privileges (absent here) would have given.
NO_VISIBLE_CHANGE = {"session_status_0002", "session_status_0007"}


def state(sandbox: Sandbox, database: str, cron_conn: psycopg.Connection) -> set[tuple[str, ...]]:
    with sandbox.connect(database) as conn:
        objects = catalog.full_snapshot(conn)
    return objects | {("job", *job) for job in catalog.job_rows(cron_conn, database)}


@pytest.mark.parametrize(("before", "after"), STEPS, ids=[after for _, after in STEPS])
def test_downgrade_removes_every_object(
    sandbox: Sandbox, database: str, database_url: str, cron_conn: psycopg.Connection, before: str, after: str
) -> None:
    if before != "base":
        helpers.upgrade(database_url, before)
    expected = state(sandbox, database, cron_conn)

    helpers.upgrade(database_url, after)
    upgraded = state(sandbox, database, cron_conn)
    helpers.downgrade(database_url, before)
    downgraded = state(sandbox, database, cron_conn)

    assert downgraded - expected == set()
    assert expected - downgraded == set()
    if after not in NO_VISIBLE_CHANGE:
        assert upgraded != expected


def test_full_downgrade_with_custom_schema(
    sandbox: Sandbox, database: str, database_url: str, cron_conn: psycopg.Connection
) -> None:
    expected = state(sandbox, database, cron_conn)

    helpers.upgrade(database_url, "head", schema="booking")
    helpers.downgrade(database_url, "base")

    assert state(sandbox, database, cron_conn) == expected
