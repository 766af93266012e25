"""The tick tests of 0003, run against the function as the later revisions replaced it.

Every property that test_tick.py checks (single instant, catch-up,
completions first, max_transitions, batching, argument checks) must still
hold once advance_session_statuses() also records history and notifies.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.test_tick import *  # noqa: F403


@pytest.fixture
def app_conn(head_conn: psycopg.Connection) -> psycopg.Connection:
    return head_conn
