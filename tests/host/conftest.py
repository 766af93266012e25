"""Fixtures for tests that use session-status as a host app would: from its built wheel.

One wheel and one virtualenv serve the whole test session. The wheel is
installed with ``--no-index --no-deps``, and a ``.pth`` file gives the
virtualenv the dependencies already installed for the test run (Alembic,
SQLAlchemy, psycopg), so no package index is needed. That directory is
added as a plain path: its ``.pth`` files, including the editable install
of this repository, are not processed, so ``import session_status`` finds
the wheel's copy.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import helpers

HOST_APP = Path(__file__).resolve().parent.parent / "host_app"

# Build artefacts and caches that must not reach the wheel build.
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "tests"
)


@dataclass(frozen=True)
class InstalledWheel:
    wheel: Path
    python: Path
    venv: Path

    def run(
        self, *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """Run the virtualenv's Python with ``args`` in ``cwd``."""
        environment = dict(os.environ)
        environment.pop("PYTHONPATH", None)
        environment.update(env or {})
        return subprocess.run(
            [str(self.python), *args],
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def alembic(self, app_dir: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``alembic`` of the virtualenv in ``app_dir`` against ``database_url``."""
        return self.run("-m", "alembic", *args, cwd=app_dir, env={"DATABASE_URL": database_url})


def build_wheel(outdir: Path) -> Path:
    """Build the wheel from a copy of the repository, so stale build/ files cannot leak into it."""
    source = outdir / "source"
    shutil.copytree(helpers.REPO, source, ignore=_NOT_SOURCES)
    command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(outdir), str(source)]
    if _build_backend_installed():
        # The test dependencies include the build backend: no package index needed.
        command.insert(4, "--no-isolation")
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels = list(outdir.glob("session_status-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _build_backend_installed() -> bool:
    try:
        setuptools_version = importlib.metadata.version("setuptools")
        importlib.metadata.version("wheel")
    except importlib.metadata.PackageNotFoundError:
        return False
    return int(setuptools_version.split(".")[0]) >= 69


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> InstalledWheel:
    workdir = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(workdir)

    target = workdir / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr

    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dependency_dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(venv_site) / "test_dependencies.pth").write_text("\n".join(sorted(dependency_dirs)) + "\n")
    return InstalledWheel(wheel=wheel, python=python, venv=target)


@pytest.fixture
def host_app(tmp_path: Path) -> Path:
    """A copy of the example host app, which a test may reconfigure."""
    app_dir = tmp_path / "host_app"
    shutil.copytree(HOST_APP, app_dir, ignore=shutil.ignore_patterns("__pycache__"))
    return app_dir
