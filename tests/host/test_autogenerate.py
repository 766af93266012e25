"""A host app's autogenerate proposes nothing for the objects of session-status.

The example app's env.py takes ``-x session_status_metadata=merge``
(our metadata in target_metadata), ``exclude`` (schema.include_object) or
``ignore`` (neither, the control case).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.host.conftest import InstalledWheel


@pytest.fixture
def upgraded_app(installed_wheel: InstalledWheel, host_app: Path, database_url: str) -> Path:
    result = installed_wheel.alembic(host_app, database_url, "upgrade", "heads")
    assert result.returncode == 0, result.stderr
    return host_app


@pytest.mark.parametrize("mode", ["merge", "exclude"])
def test_check_finds_no_changes(
    installed_wheel: InstalledWheel, upgraded_app: Path, database_url: str, mode: str
) -> None:
    result = installed_wheel.alembic(upgraded_app, database_url, "-x", f"session_status_metadata={mode}", "check")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout


def test_check_without_our_metadata_drops_sessions(
    installed_wheel: InstalledWheel, upgraded_app: Path, database_url: str
) -> None:
    result = installed_wheel.alembic(upgraded_app, database_url, "-x", "session_status_metadata=ignore", "check")

    assert result.returncode != 0
    assert "('remove_table', Table('sessions'" in result.stdout + result.stderr


@pytest.mark.parametrize("mode", ["merge", "exclude"])
def test_autogenerate_revision_is_empty(
    installed_wheel: InstalledWheel, upgraded_app: Path, database_url: str, mode: str
) -> None:
    before = set((upgraded_app / "versions").glob("*.py"))

    result = installed_wheel.alembic(
        upgraded_app,
        database_url,
        "-x",
        f"session_status_metadata={mode}",
        "revision",
        "--autogenerate",
        "--head",
        "host@head",
        "-m",
        "probe",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    created = set((upgraded_app / "versions").glob("*.py")) - before
    assert len(created) == 1
    text = created.pop().read_text()
    assert function_body(text, "upgrade") == ["pass"]
    assert function_body(text, "downgrade") == ["pass"]
    assert "down_revision = 'host_0002'" in text


def function_body(source: str, name: str) -> list[str]:
    """Return the statements of a top-level function in ``source``, without comments."""
    lines = source.split(f"def {name}() -> None:\n", 1)[1].splitlines()
    body = []
    for line in lines:
        if line and not line.startswith(" "):
            break
        if line.strip() and not line.strip().startswith("#"):
            body.append(line.strip())
    return body
