"""Ways for a host app to list our revisions in version_locations.

Alembic splits version_locations on path_separator. With ``os`` (":" on
POSIX) the package resource name ``session_status:migrations/versions``
is cut in two, and both halves name directories that do not exist, which
Alembic skips without a warning.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

import session_status
from tests import helpers
from tests.host.conftest import InstalledWheel

RESOURCE = "session_status:migrations/versions"


def configure(app_dir: Path, separator: str, locations: str) -> None:
    """Rewrite path_separator and version_locations in the app's alembic.ini."""
    ini = app_dir / "alembic.ini"
    text = ini.read_text()
    text = re.sub(r"(?m)^path_separator = .*$", f"path_separator = {separator}", text)
    text = re.sub(r"(?m)^version_locations = .*$", lambda _: f"version_locations = {locations}", text)
    ini.write_text(text)


def heads(installed_wheel: InstalledWheel, app_dir: Path) -> tuple[int, str]:
    result = installed_wheel.alembic(app_dir, "postgresql://unused@127.0.0.1:1/unused", "heads")
    return result.returncode, result.stdout + result.stderr


def test_space_separator_with_resource(installed_wheel: InstalledWheel, host_app: Path) -> None:
    configure(host_app, "space", f"%(here)s/versions {RESOURCE}")

    returncode, output = heads(installed_wheel, host_app)

    assert returncode == 0, output
    assert f"{helpers.our_head()} (session_status) (head)" in output
    assert "host_0002 (host) (head)" in output


def test_semicolon_separator_with_resource(installed_wheel: InstalledWheel, host_app: Path) -> None:
    configure(host_app, ";", f"%(here)s/versions;{RESOURCE}")

    returncode, output = heads(installed_wheel, host_app)

    assert returncode == 0, output
    assert f"{helpers.our_head()} (session_status) (head)" in output


def test_newline_separator_with_resource(installed_wheel: InstalledWheel, host_app: Path) -> None:
    configure(host_app, "newline", f"\n    %(here)s/versions\n    {RESOURCE}")

    returncode, output = heads(installed_wheel, host_app)

    assert returncode == 0, output
    assert f"{helpers.our_head()} (session_status) (head)" in output


def test_os_separator_breaks_resource(installed_wheel: InstalledWheel, host_app: Path) -> None:
    configure(host_app, "os", f"%(here)s/versions:{RESOURCE}")

    returncode, output = heads(installed_wheel, host_app)

    # host_0002 depends on session_status_0001, which Alembic no longer finds.
    assert returncode != 0
    assert "KeyError: 'session_status_0001'" in output


def test_os_separator_drops_our_lineage_silently(installed_wheel: InstalledWheel, host_app: Path) -> None:
    (host_app / "versions" / "host_0002_bookings.py").unlink()
    configure(host_app, "os", f"%(here)s/versions:{RESOURCE}")

    returncode, output = heads(installed_wheel, host_app)

    assert returncode == 0, output
    assert "host_0001 (host) (head)" in output
    assert "session_status" not in output


def test_os_separator_with_version_location(installed_wheel: InstalledWheel, host_app: Path) -> None:
    # alembic.ini keeps path_separator = os; the program that runs Alembic
    # adds the absolute directory that version_location() returns.
    configure(host_app, "os", "%(here)s/versions")
    script = (
        "import os, sys\n"
        "from alembic import command\n"
        "from alembic.config import Config\n"
        "import session_status\n"
        "config = Config('alembic.ini')\n"
        "own = config.get_main_option('version_locations')\n"
        "combined = own + os.pathsep + session_status.version_location()\n"
        "config.set_main_option('version_locations', combined.replace('%', '%%'))\n"
        "command.heads(config)\n"
    )

    result = installed_wheel.run("-c", script, cwd=host_app)

    assert result.returncode == 0, result.stderr
    assert f"{helpers.our_head()} (session_status) (head)" in result.stdout
    assert "host_0002 (host) (head)" in result.stdout


@pytest.mark.skipif(
    Path(session_status.version_location()).is_relative_to(Path(session_status.__file__).parent),
    reason="session-status is installed from a wheel here, not in editable mode",
)
def test_resource_notation_needs_installed_wheel() -> None:
    # In an editable install of this repository the revisions stay in
    # migrations/versions, outside the session_status package directory.
    config = Config()
    config.set_main_option("script_location", session_status.script_location())
    config.set_main_option("path_separator", "space")

    config.set_main_option("version_locations", RESOURCE)
    resource_revisions = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    config.set_main_option("version_locations", session_status.version_location())
    helper_revisions = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}

    assert helpers.our_head() in helper_revisions
    assert resource_revisions == set()
