"""schema.build_metadata() and include_object() against the DDL of the revisions."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from session_status import schema
from tests import helpers


def differences(url: str, metadata: sa.MetaData, include_object=None) -> list:  # type: ignore[no-untyped-def]
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            opts = {
                "compare_type": True,
                "compare_server_default": True,
                "include_schemas": True,
                "include_name": lambda name, type_, parent: type_ != "schema" or name not in {"cron"},
            }
            if include_object is not None:
                opts["include_object"] = include_object
            context = MigrationContext.configure(conn, opts=opts)
            return [diff for diff in compare_metadata(context, metadata) if "alembic_version" not in repr(diff)]
    finally:
        engine.dispose()


@pytest.mark.parametrize("schema_name", ["public", "booking"])
def test_metadata_matches_ddl(database_url: str, schema_name: str) -> None:
    helpers.upgrade(database_url, "head", schema=schema_name)

    assert differences(database_url, schema.build_metadata(schema_name)) == []


def test_include_object_hides_our_objects(database_url: str) -> None:
    helpers.upgrade(database_url, "head", schema="booking")
    empty = sa.MetaData()

    assert differences(database_url, empty, schema.include_object) == []
    unfiltered = differences(database_url, empty)
    assert any(diff[0] == "remove_table" and diff[1].name == "sessions" for diff in unfiltered)
