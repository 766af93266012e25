"""A throwaway local PostgreSQL cluster with pg_cron preloaded.

The demo, the test suite and the benchmark all start their server through
:class:`Sandbox`, so the three see the same configuration. The cluster lives
in a temporary directory, listens on 127.0.0.1 on a free port and trusts
every local connection, so it must never hold data worth keeping.

``initdb`` and ``pg_ctl`` refuse to run as root. When the current process is
root, the server commands run as the ``postgres`` OS user through
``runuser``, and the data directory is handed to that user.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psycopg

from session_status.errors import SandboxError

logger = logging.getLogger(__name__)

SUPERUSER = "postgres"
SERVER_OS_USER_WHEN_ROOT = "postgres"

# Settings that keep a disposable cluster fast. Callers that measure commit
# latency (the benchmark) or survive crashes pass ``durable=True``.
_FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def find_bindir() -> Path:
    """Locate the PostgreSQL server binaries.

    ``SESSION_STATUS_PG_BINDIR`` wins. Otherwise the newest
    ``/usr/lib/postgresql/<major>/bin`` (Debian's layout) that has pg_cron
    installed is used, then the directory that ``pg_config --bindir`` reports.
    """
    override = os.environ.get("SESSION_STATUS_PG_BINDIR")
    if override:
        path = Path(override)
        if not (path / "initdb").exists():
            raise SandboxError(
                f"SESSION_STATUS_PG_BINDIR={override!r} has no initdb; "
                "point it at the bin directory of a PostgreSQL server installation"
            )
        return path

    candidates: list[Path] = []
    debian_root = Path("/usr/lib/postgresql")
    if debian_root.is_dir():
        majors = sorted(
            (p for p in debian_root.iterdir() if p.name.isdigit()),
            key=lambda p: int(p.name),
            reverse=True,
        )
        candidates.extend(p / "bin" for p in majors)
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))

    with_server = [p for p in candidates if (p / "initdb").exists()]
    if not with_server:
        raise SandboxError(
            "no PostgreSQL server binaries found (looked for initdb in "
            f"{', '.join(map(str, candidates)) or '/usr/lib/postgresql/*/bin'}); "
            "install them, e.g. `apt-get install postgresql-15`, or set SESSION_STATUS_PG_BINDIR"
        )
    for bindir in with_server:
        if _pg_cron_control_file(bindir).exists():
            return bindir
    return with_server[0]


def _pg_cron_control_file(bindir: Path) -> Path:
    result = subprocess.run([str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        # Debian's layout when pg_config is missing from the server bin directory.
        sharedir = Path("/usr/share/postgresql") / bindir.parent.name
    else:
        sharedir = Path(result.stdout.strip())
    return sharedir / "extension" / "pg_cron.control"


def server_major_version(bindir: Path) -> int:
    result = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True)
    # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    return int(result.stdout.split(")")[1].split()[0].split(".")[0])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sandbox:
    """A local PostgreSQL cluster, created on :meth:`start` and deleted on :meth:`stop`.

    ``cron_database`` sets ``cron.database_name``, the one database where
    pg_cron's extension and launcher live. ``preload_pg_cron=False`` starts a
    server without pg_cron, for testing the preflight checks.
    """

    cron_database: str = "postgres"
    preload_pg_cron: bool = True
    durable: bool = False
    settings: Mapping[str, str] = field(default_factory=dict)
    bindir: Path | None = None
    port: int | None = None
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self._workdir: Path | None = None
        self._running = False

    # -- paths ------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise SandboxError("the sandbox has not been started; call start() first")
        return self._workdir

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "socket"

    @property
    def logfile(self) -> Path:
        return self.workdir / "server.log"

    # -- connections --------------------------------------------------------

    def url(self, dbname: str = "postgres", *, driver: str = "postgresql+psycopg", user: str = SUPERUSER) -> str:
        """Return an SQLAlchemy URL for ``dbname`` on this cluster."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{driver}://{user}@{host}:{self.port}/{dbname}"

    def conninfo(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """Return a libpq connection string for ``dbname`` on this cluster."""
        return psycopg.conninfo.make_conninfo(host=self.host, port=self.port, dbname=dbname, user=user)

    def connect(
        self, dbname: str = "postgres", *, autocommit: bool = True, user: str = SUPERUSER
    ) -> psycopg.Connection:
        """Open a psycopg connection to ``dbname`` as ``user``."""
        return psycopg.connect(self.conninfo(dbname, user), autocommit=autocommit)

    def create_database(self, name: str, *, template: str | None = None) -> None:
        query = psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name))
        if template:
            query += psycopg.sql.SQL(" TEMPLATE {}").format(psycopg.sql.Identifier(template))
        with self.connect() as conn:
            conn.execute(query)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` after terminating its connections; a missing database is fine."""
        with self.connect() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
            )

    # -- life cycle -----------------------------------------------------------

    def start(self) -> Sandbox:
        """Create the cluster in a new temporary directory and start it."""
        if self._running:
            return self
        self.bindir = self.bindir or find_bindir()
        if self.preload_pg_cron and not _pg_cron_control_file(self.bindir).exists():
            major = self.bindir.parent.name
            raise SandboxError(
                f"pg_cron is not installed for the PostgreSQL server in {self.bindir}; "
                f"install it with `apt-get install postgresql-{major}-cron` (as root), "
                "or run `make system-deps`"
            )

        self._make_workdir()
        self._run_server_command(
            "initdb",
            ["-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
        )
        self._write_settings()
        self.port = self.port or _free_port()
        self._write_port()
        self._pg_ctl_start()
        self._running = True
        logger.info("sandbox PostgreSQL started on %s:%s (data in %s)", self.host, self.port, self.datadir)
        return self

    def start_standby(self) -> Sandbox:
        """Create and start a streaming-replication standby of this running server.

        The standby is a new :class:`Sandbox` with the same settings and its
        own directory, socket directory and port, made by
        ``pg_basebackup -R`` (which writes ``standby.signal`` and
        ``primary_conninfo``). pg_cron stores the socket directory
        (``cron.host``) and port of the server that scheduled a job in
        ``cron.job.nodename`` and ``nodeport``, so after :meth:`promote` the
        jobs must be pointed at the standby's before they can run.

        It needs ``wal_level = replica`` or higher on this server,
        PostgreSQL's default. No replication slot is used, so the standby
        falls behind for good if this server recycles WAL it has not
        received. The caller stops it.
        """
        if not self._running:
            raise SandboxError("the primary is not running; start it before creating a standby")
        standby = Sandbox(
            cron_database=self.cron_database,
            preload_pg_cron=self.preload_pg_cron,
            durable=self.durable,
            settings=dict(self.settings),
            bindir=self.bindir,
            host=self.host,
        )
        standby._make_workdir()
        standby._run_server_command(
            "pg_basebackup",
            [
                "-D", str(standby.datadir),
                "-h", self.host,
                "-p", str(self.port),
                "-U", SUPERUSER,
                "-R",
                "-X", "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
        )  # fmt: skip
        # postgresql.conf came from the primary; settings appended later win.
        standby._write_settings()
        standby.port = _free_port()
        standby._write_port()
        standby._pg_ctl_start()
        standby._running = True
        logger.info("sandbox standby of port %s started on %s:%s", self.port, standby.host, standby.port)
        return standby

    def promote(self) -> None:
        """Promote this standby to a primary and wait until it accepts writes."""
        self._run_server_command("pg_ctl", ["promote", "-D", str(self.datadir), "-w", "-t", "60"])
        logger.info("sandbox on port %s promoted", self.port)

    def stop(self, *, mode: str = "fast", remove: bool = True) -> None:
        """Stop the server (``mode`` as in ``pg_ctl stop -m``) and delete its files."""
        if self._workdir is None:
            return
        if self._running:
            self.stop_server(mode=mode)
        if remove:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        logger.info("sandbox PostgreSQL stopped")

    def stop_server(self, *, mode: str = "fast") -> None:
        """Stop the server processes but keep the data directory."""
        self._run_server_command("pg_ctl", ["stop", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60"])
        self._running = False

    def configure(self, settings: Mapping[str, str]) -> None:
        """Append postgresql.conf settings (values as written in the file); they apply at the next restart."""
        self._append_conf([f"{name} = {value}" for name, value in settings.items()])

    def restart(self) -> None:
        """Start the server again on the same data directory and port."""
        if self._running:
            self.stop_server()
        self._pg_ctl_start()
        self._running = True

    @property
    def running(self) -> bool:
        return self._running

    def postmaster_pid(self) -> int:
        return int((self.datadir / "postmaster.pid").read_text().splitlines()[0])

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------

    def server_settings(self) -> dict[str, str]:
        """Return the postgresql.conf settings this sandbox runs with."""
        result = {
            "listen_addresses": f"'{self.host}'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "100",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
        }
        if not self.durable:
            result.update(_FAST_SETTINGS)
        if self.preload_pg_cron:
            result["shared_preload_libraries"] = "'pg_cron'"
            result["cron.database_name"] = f"'{self.cron_database}'"
            # The launcher connects through the socket, which trust covers.
            result["cron.host"] = f"'{self.socket_dir}'"
        result.update(self.settings)
        return result

    def _make_workdir(self) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="session-status-pg-"))
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_OS_USER_WHEN_ROOT)
            for path in (self._workdir, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(self._workdir, 0o700 if os.geteuid() != 0 else 0o755)

    def _write_settings(self) -> None:
        lines = [f"{name} = {value}" for name, value in self.server_settings().items()]
        self._append_conf(lines)

    def _write_port(self) -> None:
        self._append_conf([f"port = {self.port}"])

    def _append_conf(self, lines: Sequence[str]) -> None:
        conf = self.datadir / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as handle:
            handle.write("\n# session-status sandbox\n" + "\n".join(lines) + "\n")

    def _pg_ctl_start(self) -> None:
        try:
            self._run_server_command(
                "pg_ctl", ["start", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60"]
            )
        except SandboxError as error:
            raise SandboxError(f"{error}\nlast lines of {self.logfile}:\n{self._log_tail()}") from error

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def _run_server_command(self, program: str, args: Sequence[str]) -> None:
        assert self.bindir is not None
        command = [str(self.bindir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_OS_USER_WHEN_ROOT, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.workdir)
        if result.returncode != 0:
            raise SandboxError(
                f"{program} failed with exit code {result.returncode}: {(result.stderr or result.stdout).strip()}"
            )
