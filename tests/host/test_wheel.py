"""The wheel ships every revision, SQL file and template, and imports from its install."""

from __future__ import annotations

import zipfile

from tests import helpers
from tests.host.conftest import InstalledWheel

MIGRATIONS = helpers.REPO / "migrations"
SQL = helpers.REPO / "session_status" / "sql"


def repository_files() -> set[str]:
    """Return the wheel paths that the repository's migration files must have."""
    expected = {f"session_status/migrations/versions/{path.name}" for path in (MIGRATIONS / "versions").glob("*.py")}
    expected |= {f"session_status/sql/{path.name}" for path in SQL.glob("*.sql")}
    expected |= {"session_status/migrations/script.py.mako", "session_status/migrations/env.py"}
    return expected


def test_repository_has_revisions_and_sql() -> None:
    expected = repository_files()

    assert any(name.endswith("_schedule_job.py") for name in expected)
    assert any(name.endswith(".sql") for name in expected)


def test_wheel_contains_every_migration_file(installed_wheel: InstalledWheel) -> None:
    with zipfile.ZipFile(installed_wheel.wheel) as wheel:
        names = set(wheel.namelist())

    assert repository_files() - names == set()
    assert not any(name.startswith("tests/") for name in names)


def test_installed_package_comes_from_wheel(installed_wheel: InstalledWheel) -> None:
    result = installed_wheel.run(
        "-c",
        "import session_status, pathlib; "
        "print(session_status.__file__); "
        "print(session_status.version_location()); "
        "print(sorted(p.name for p in pathlib.Path(session_status.version_location()).glob('*.py')))",
        cwd=installed_wheel.venv,
    )
    assert result.returncode == 0, result.stderr
    module_file, version_dir, revisions = result.stdout.splitlines()

    assert module_file.startswith(str(installed_wheel.venv))
    assert version_dir.startswith(str(installed_wheel.venv))
    expected = sorted(path.name for path in (MIGRATIONS / "versions").glob("*.py"))
    assert revisions == repr(expected)
