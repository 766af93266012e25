"""Probing the server for pg_cron, and scheduling jobs in the right database.

pg_cron keeps its extension, its ``cron.job`` table and its launcher in one
database per server, named by the ``cron.database_name`` setting. When the
app database is that database, jobs are scheduled with ``cron.schedule``
on the migration's own connection. Otherwise (the usual layout on RDS,
Cloud SQL, Azure and most self-hosted servers) a second connection to the
cron database calls ``cron.schedule_in_database``, and the job runs in the
app database. That second connection commits when the migration's
transaction commits and rolls back when it rolls back, so a failed upgrade
leaves no job behind.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from session_status.config import MAX_IDENTIFIER_BYTES, Settings, quote_literal
from session_status.errors import ConfigurationError, PreflightError, PrivilegeError

logger = logging.getLogger(__name__)

MIN_VERSION = (1, 4)
SECONDS_SCHEDULE_VERSION = (1, 5)
JOB_NAME_PREFIX = "session_status:"
# pg_cron uses cron.database_name's built-in default when the setting is unset.
DEFAULT_CRON_DATABASE = "postgres"

_CRON_CONNECTION_KEY = "session_status.cron_connection"


def parse_version(text: str) -> tuple[int, int]:
    """Parse an extension version such as ``'1.4-1'`` or ``'1.6'`` into ``(major, minor)``."""
    match = re.match(r"(\d+)\.(\d+)", text)
    if not match:
        raise PreflightError(f"cannot parse the pg_cron version {text!r}")
    return int(match.group(1)), int(match.group(2))


def job_name(database: str, purpose: str = "") -> str:
    """Return the pg_cron job name for ``database``, namespaced by package.

    pg_cron stores job names as ``name`` (63 bytes). A name that would be
    longer keeps a readable prefix of the database name and ends with a hash
    of the whole name, so distinct databases never share a job.
    """
    suffix = f":{purpose}" if purpose else ""
    name = f"{JOB_NAME_PREFIX}{database}{suffix}"
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(database.encode()).hexdigest()[:12]
    room = MAX_IDENTIFIER_BYTES - len(JOB_NAME_PREFIX) - len(suffix) - len(digest) - 1
    prefix = database.encode()[:room].decode(errors="ignore")
    return f"{JOB_NAME_PREFIX}{prefix}~{digest}{suffix}"


@dataclass(frozen=True)
class ServerInfo:
    """Facts about pg_cron on the server, as the app connection reads them."""

    current_database: str
    current_user: str
    is_superuser: bool
    # None when the role may not read shared_preload_libraries (it needs
    # superuser or pg_read_all_settings): the preload is then not checked.
    preloaded: bool | None
    cron_database: str
    available_version: str | None

    @property
    def same_database(self) -> bool:
        return self.current_database == self.cron_database


def probe(connection: Connection, settings: Settings | None = None) -> ServerInfo:
    """Read the pg_cron-related facts visible from ``connection``.

    PostgreSQL shows ``shared_preload_libraries`` and ``cron.database_name``
    only to superusers and members of ``pg_read_all_settings``. For other
    roles pg_cron's database is inferred: the current database when the
    extension is created in it, else the database of ``cron_database_url``
    from ``settings``, else pg_cron's default ``postgres``.
    """
    row = connection.execute(
        sa.text(
            "SELECT current_database(), current_user, "
            "       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
            "       pg_has_role(current_user, 'pg_read_all_settings', 'USAGE'), "
            "       (SELECT default_version FROM pg_available_extensions WHERE name = 'pg_cron'), "
            "       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')"
        )
    ).one()
    current_database, current_user, is_superuser, reads_settings, available_version, installed_here = row
    if is_superuser or reads_settings:
        preload_setting, cron_database = connection.execute(
            sa.text("SELECT current_setting('shared_preload_libraries'), current_setting('cron.database_name', true)")
        ).one()
        # Entries may be paths such as '$libdir/pg_cron' or 'pg_cron.so'.
        libraries = [
            lib.strip().strip('"').rsplit("/", 1)[-1].removesuffix(".so") for lib in (preload_setting or "").split(",")
        ]
        preloaded: bool | None = "pg_cron" in libraries
        cron_database = cron_database or DEFAULT_CRON_DATABASE
    else:
        preloaded = None
        if installed_here:
            cron_database = current_database
        elif settings is not None and settings.cron_database_url:
            cron_database = cron_database_url(connection, settings, None).database or DEFAULT_CRON_DATABASE
        else:
            cron_database = DEFAULT_CRON_DATABASE
        if not connection.info.get("session_status.settings_warning"):
            connection.info["session_status.settings_warning"] = True
            logger.warning(
                "role %r may not read shared_preload_libraries or cron.database_name (it needs superuser or "
                "pg_read_all_settings), so the preload of pg_cron is not checked and pg_cron's database is "
                "taken to be %r",
                current_user,
                cron_database,
            )
    return ServerInfo(
        current_database=current_database,
        current_user=current_user,
        is_superuser=bool(is_superuser),
        preloaded=preloaded,
        cron_database=cron_database,
        available_version=available_version,
    )


def check_server(info: ServerInfo) -> None:
    """Raise :class:`PreflightError` unless pg_cron is preloaded and recent enough."""
    if info.preloaded is False:
        raise PreflightError(
            "pg_cron is not loaded by this server: 'pg_cron' is missing from shared_preload_libraries. "
            "Add it (shared_preload_libraries = 'pg_cron' in postgresql.conf, or the parameter group "
            "of a managed server), set cron.database_name, and restart PostgreSQL. Nothing was changed."
        )
    if info.available_version is None:
        raise PreflightError(
            "pg_cron is preloaded but its extension files are not installed on the server; "
            "install the pg_cron package for this PostgreSQL version (e.g. postgresql-15-cron)"
        )
    if parse_version(info.available_version) < MIN_VERSION:
        raise PreflightError(
            f"pg_cron {info.available_version} is too old: session-status needs 1.4 or later "
            "(for cron.schedule_in_database and named jobs); upgrade the pg_cron package"
        )


# -- the connection that talks to pg_cron -----------------------------------------


def cron_connection(connection: Connection, settings: Settings, info: ServerInfo) -> Connection:
    """Return a connection to pg_cron's database whose transaction follows ``connection``'s.

    In same-database mode that is ``connection`` itself. Otherwise a second
    connection is opened once per migration transaction: it commits just
    before ``connection`` commits and rolls back when it rolls back.
    """
    if info.same_database:
        return connection

    existing = connection.info.get(_CRON_CONNECTION_KEY)
    if existing is not None and not existing.closed:
        return existing

    url = cron_database_url(connection, settings, info)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        cron = engine.connect()
        cron.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        raise PreflightError(
            f"cannot connect to pg_cron's database {info.cron_database!r} at "
            f"{sa.engine.make_url(url).render_as_string(hide_password=True)}: {error.orig}. "
            "Set -x cron_database_url=URL (or cron_database_url in [session_status]) to a URL that "
            "reaches it. Nothing was changed."
        ) from error
    try:
        _check_same_server(connection, cron, info, url)
    except Exception:
        cron.close()
        engine.dispose()
        raise
    connection.info[_CRON_CONNECTION_KEY] = cron
    _follow_transaction(connection, cron)
    logger.info("connected to pg_cron's database %r for cross-database scheduling", info.cron_database)
    return cron


def _check_same_server(connection: Connection, cron: Connection, info: ServerInfo, url: sa.engine.URL) -> None:
    """Raise unless ``cron`` reaches pg_cron's database on the server of ``connection``."""
    masked_url = url.render_as_string(hide_password=True)
    reached = cron.execute(sa.text("SELECT current_database()")).scalar_one()
    if reached != info.cron_database:
        raise ConfigurationError(
            f"invalid cron_database_url {masked_url}: it connects to database {reached!r}, but pg_cron runs in "
            f"{info.cron_database!r} (cron.database_name). Point it at that database. Nothing was changed."
        )
    identifiers = []
    for conn in (connection, cron):
        try:
            with conn.begin_nested():
                identifiers.append(
                    conn.execute(sa.text("SELECT system_identifier FROM pg_catalog.pg_control_system()")).scalar()
                )
        except sa.exc.DBAPIError:
            # Some servers and roles may not call pg_control_system(); the
            # database name check above is then the only one.
            logger.debug("cannot read the system identifier to compare the two servers")
            return
    if identifiers[0] != identifiers[1]:
        raise ConfigurationError(
            f"invalid cron_database_url {masked_url}: it reaches another PostgreSQL server than the app database "
            "(their system identifiers differ). pg_cron must run the job on the app's own server. "
            "Nothing was changed."
        )


def cron_database_url(connection: Connection, settings: Settings, info: ServerInfo | None) -> sa.engine.URL:
    """Return the URL of pg_cron's database: the configured one, or the app URL with the database swapped."""
    if settings.cron_database_url:
        try:
            url = sa.engine.make_url(normalize_url(settings.cron_database_url))
        except sa.exc.ArgumentError as error:
            raise ConfigurationError(f"invalid cron_database_url: {error}") from None
        return url
    assert info is not None, "info is required when cron_database_url is not set"
    return connection.engine.url.set(database=info.cron_database)


def normalize_url(url: str) -> str:
    """Make a ``postgresql://`` or ``postgres://`` URL use the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _follow_transaction(connection: Connection, cron: Connection) -> None:
    # Listeners cannot be removed while SQLAlchemy dispatches the event, so
    # they stay registered on this Connection object and act only once.
    finished = False

    def finish(commit: bool) -> None:
        nonlocal finished
        if finished:
            return
        finished = True
        connection.info.pop(_CRON_CONNECTION_KEY, None)
        try:
            if commit:
                cron.commit()
            else:
                cron.rollback()
        finally:
            cron.close()
            cron.engine.dispose()

    sa.event.listen(connection, "commit", lambda _: finish(commit=True))
    sa.event.listen(connection, "rollback", lambda _: finish(commit=False))


# -- checks and actions in pg_cron's database ---------------------------------------


def installed_version(cron: Connection) -> str | None:
    return cron.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")).scalar()


def check_installed_version(cron: Connection) -> None:
    """Raise :class:`PreflightError` when the created pg_cron extension is older than 1.4."""
    version = installed_version(cron)
    if version is not None and parse_version(version) < MIN_VERSION:
        database_name = cron.execute(sa.text("SELECT current_database()")).scalar_one()
        raise PreflightError(
            f"the pg_cron extension in database {database_name!r} is at version {version}, but session-status "
            f"needs 1.4 or later; run `ALTER EXTENSION pg_cron UPDATE;` there. Nothing was changed."
        )


def check_privileges(cron: Connection, info: ServerInfo, *, cross_database: bool) -> None:
    """Raise :class:`PrivilegeError` naming the grant that the connecting role lacks."""
    role, database = cron.execute(sa.text("SELECT current_user, current_database()")).one()
    superuser = cron.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
    if superuser:
        return
    version = installed_version(cron)
    if version is None:
        guessed = ""
        if info.preloaded is None:
            guessed = (
                f" Role {role!r} may not read cron.database_name, so pg_cron's database was taken to be "
                f"{database!r}; if it is another database, set cron_database_url to a URL of that database."
            )
        raise PrivilegeError(
            f"the pg_cron extension is not created in database {database!r} and role {role!r} is not a "
            f"superuser, so it cannot create it. Ask a superuser to run "
            f"`CREATE EXTENSION pg_cron SCHEMA pg_catalog;` in {database!r} and "
            f"`GRANT USAGE ON SCHEMA cron TO {role};`.{guessed} Nothing was changed."
        )
    if not cron.execute(sa.text("SELECT has_schema_privilege('cron', 'USAGE')")).scalar():
        raise PrivilegeError(
            f"role {role!r} lacks USAGE on schema cron in database {database!r}; "
            f"a superuser must run `GRANT USAGE ON SCHEMA cron TO {role};`. Nothing was changed."
        )
    if cross_database:
        signature = "cron.schedule_in_database(text,text,text,text,text,boolean)"
        allowed = cron.execute(
            sa.text("SELECT has_function_privilege(:signature, 'EXECUTE')"), {"signature": signature}
        ).scalar()
        if not allowed:
            raise PrivilegeError(
                f"role {role!r} may not schedule jobs in other databases: it lacks EXECUTE on {signature}. "
                f"A superuser must run `GRANT EXECUTE ON FUNCTION {signature} TO {role};` in "
                f"{database!r}. Nothing was changed."
            )
    if role != info.current_user:
        raise PrivilegeError(
            f"cron_database_url connects as {role!r} but the migration runs as {info.current_user!r}; "
            "only a superuser may schedule a job for another role. Connect both as the same role "
            "or use a superuser for cron_database_url."
        )


def find_job(cron: Connection, name: str, database: str) -> dict[str, Any] | None:
    row = (
        cron.execute(
            sa.text(
                "SELECT jobid, schedule, command, database, username, active FROM cron.job "
                "WHERE jobname = :name AND database = :database"
            ),
            {"name": name, "database": database},
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


def schedule_job(
    cron: Connection, *, name: str, schedule: str, command: str, database: str, username: str, same_database: bool
) -> int:
    """Create or replace the job ``name``; pg_cron keeps one job per name and role."""
    version = installed_version(cron)
    if version is None:
        database_name = cron.execute(sa.text("SELECT current_database()")).scalar_one()
        raise PreflightError(
            f"the pg_cron extension does not exist in database {database_name!r}, so the job cannot be "
            "scheduled. Create it (`CREATE EXTENSION pg_cron SCHEMA pg_catalog;` as a superuser) or run the "
            "migrations from session_status_0002 again. Nothing was changed."
        )
    if re.fullmatch(r"[0-9]+ seconds?", schedule.strip()) and parse_version(version) < SECONDS_SCHEDULE_VERSION:
        raise ConfigurationError(
            f"invalid schedule {schedule!r}: pg_cron {version} supports minute granularity only; "
            "'N seconds' schedules need pg_cron 1.5 or later"
        )
    # pg_cron replaces a job of the same name and role but keeps its database,
    # so a name that another database's job already has (a database called
    # "app:retention" beside "app", say) would take that job over.
    other_database = cron.execute(
        sa.text("SELECT database FROM cron.job WHERE jobname = :name AND database <> :database LIMIT 1"),
        {"name": name, "database": database},
    ).scalar()
    if other_database is not None:
        raise ConfigurationError(
            f"the pg_cron job name {name!r} already belongs to a job that runs in database {other_database!r}, so it "
            f"cannot be used for database {database!r}. Rename one of the databases. Nothing was changed."
        )
    params: dict[str, str | None]
    if same_database:
        statement = sa.text("SELECT cron.schedule(CAST(:name AS text), :schedule, :command)")
        params = {"name": name, "schedule": schedule, "command": command}
    else:
        # pg_cron (1.4 and later) requires superuser for any non-NULL
        # username, even the caller's own; NULL means the current user.
        current_user = cron.execute(sa.text("SELECT current_user")).scalar_one()
        statement = sa.text(
            "SELECT cron.schedule_in_database(:name, :schedule, :command, :database, CAST(:username AS text), true)"
        )
        params = {
            "name": name,
            "schedule": schedule,
            "command": command,
            "database": database,
            "username": None if username == current_user else username,
        }
    jobid = int(cron.execute(statement, params).scalar_one())
    logger.info("scheduled pg_cron job %r (id %s, %r) in database %r", name, jobid, schedule, database)
    return jobid


def unschedule_job(cron: Connection, *, name: str, database: str) -> bool:
    """Remove the job ``name`` that runs in ``database``; return False when there was none."""
    if installed_version(cron) is None:
        return False
    # Row-level security on cron.job shows a role only its own jobs, unless
    # it is a superuser. Every job of this name and database that the role
    # can read is removed, so a job scheduled again by another role (after a
    # stamp, say) does not survive a superuser's downgrade.
    jobids = (
        cron.execute(
            sa.text("SELECT jobid FROM cron.job WHERE jobname = :name AND database = :database ORDER BY jobid"),
            {"name": name, "database": database},
        )
        .scalars()
        .all()
    )
    if not jobids:
        logger.info("pg_cron job %r was already removed", name)
        return False
    for jobid in jobids:
        try:
            cron.execute(sa.text("SELECT cron.unschedule(CAST(:jobid AS bigint))"), {"jobid": jobid})
        except sa.exc.DBAPIError as error:
            if "shared_preload_libraries" not in str(error.orig):
                raise
            raise PreflightError(
                f"cannot remove the pg_cron job {name!r}: the extension exists but this server no longer "
                "loads pg_cron (it is missing from shared_preload_libraries), and pg_cron's functions work "
                "only when it is loaded. Add it back and restart PostgreSQL, then downgrade again."
            ) from error
        logger.info("unscheduled pg_cron job %r (id %s)", name, jobid)
    return True


# -- offline scripts (alembic --sql) ------------------------------------------------
#
# Without a server there is no database name to build the job name from and
# no way to tell which database pg_cron lives in. The scripts below compute
# both when they run: the job name from current_database() with the rule of
# job_name(), and a guard that stops the script unless it runs in pg_cron's
# own database (cron.database_name). Cross-database layouts cannot be served
# offline, because scheduling there needs a second connection.

_PURPOSE_PATTERN = re.compile(r"[A-Za-z0-9_.-]*")
_DIGEST_CHARS = 12


def job_name_sql(database: str, purpose: str = "") -> str:
    """Return an SQL expression that computes :func:`job_name` of the text expression ``database``.

    ``database`` is inserted verbatim several times, so it must be a
    side-effect-free expression such as a variable or ``current_database()``.
    """
    _check_purpose(purpose)
    suffix = f":{purpose}" if purpose else ""
    room = MAX_IDENTIFIER_BYTES - len(JOB_NAME_PREFIX) - len(suffix) - _DIGEST_CHARS - 1
    prefix, suffix_literal = quote_literal(JOB_NAME_PREFIX), quote_literal(suffix)
    # The longest prefix of whole characters that fits in `room` bytes, as
    # database.encode()[:room].decode(errors="ignore") computes it in Python.
    truncated = (
        "(SELECT coalesce(pg_catalog.string_agg(c.ch, '' ORDER BY c.pos), '') FROM ("
        "SELECT t.ch, t.pos, pg_catalog.sum(pg_catalog.octet_length(t.ch)) OVER (ORDER BY t.pos) AS bytes "
        f"FROM pg_catalog.regexp_split_to_table({database}, '') WITH ORDINALITY AS t(ch, pos)) AS c "
        f"WHERE c.bytes <= {room})"
    )
    digest = (
        f"pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to({database}, 'UTF8')), 'hex'), "
        f"{_DIGEST_CHARS})"
    )
    full = f"{prefix} || {database} || {suffix_literal}"
    return (
        f"CASE WHEN pg_catalog.octet_length({full}) <= {MAX_IDENTIFIER_BYTES} THEN {full} "
        f"ELSE {prefix} || {truncated} || '~' || {digest} || {suffix_literal} END"
    )


def schedule_job_script(*, schedule: str, command: str, purpose: str = "", command_is_sql: bool = False) -> str:
    """Return SQL that schedules the job :func:`job_name` (current database, ``purpose``) when run.

    ``command`` is the job's command text, or with ``command_is_sql`` an SQL
    text expression that computes it when the script runs; the expression
    may use the variables ``v_database`` and ``v_name``. The script works
    only in pg_cron's own database and raises an error in any other. Its
    leading SQL comment states this limit.
    """
    command_sql = command if command_is_sql else quote_literal(command)
    return _offline_script(
        f"-- Schedules the pg_cron job {JOB_NAME_PREFIX}<current database>{':' + purpose if purpose else ''}.",
        purpose,
        f"PERFORM cron.schedule(v_name, {quote_literal(schedule)}, {command_sql});\n"
        "    RAISE NOTICE 'session-status: scheduled pg_cron job %', v_name;",
    )


def unschedule_job_script(*, purpose: str = "") -> str:
    """Return SQL that removes the job :func:`job_name` (current database, ``purpose``) if it exists."""
    return _offline_script(
        f"-- Removes the pg_cron job {JOB_NAME_PREFIX}<current database>{':' + purpose if purpose else ''} "
        "if it exists.",
        purpose,
        "IF pg_catalog.to_regclass('cron.job') IS NULL THEN\n"
        "        RETURN;\n"
        "    END IF;\n"
        "    FOR v_jobid IN\n"
        "        SELECT j.jobid FROM cron.job AS j WHERE j.jobname = v_name AND j.database = v_database\n"
        "    LOOP\n"
        "        PERFORM cron.unschedule(v_jobid);\n"
        "        RAISE NOTICE 'session-status: unscheduled pg_cron job % (id %)', v_name, v_jobid;\n"
        "    END LOOP;",
    )


def _offline_script(title: str, purpose: str, action: str) -> str:
    return f"""{title}
-- Offline scripts support pg_cron's own database only (cron.database_name).
-- When the app database is another database, run this revision online:
-- it manages the job through a second connection to pg_cron's database.
DO $session_status$
DECLARE
    v_database text := pg_catalog.current_database();
    v_cron_database text := coalesce(pg_catalog.current_setting('cron.database_name', true),
                                      {quote_literal(DEFAULT_CRON_DATABASE)});
    v_name text := {job_name_sql("v_database", purpose)};
    v_jobid bigint;
BEGIN
    IF v_database <> v_cron_database THEN
        RAISE EXCEPTION 'session-status: this script must run in pg_cron''s database %, not in %',
                        v_cron_database, v_database
            USING HINT = 'Offline (--sql) scripts cannot manage pg_cron jobs across databases. '
                         'Run alembic upgrade/downgrade online, or apply the script in the cron database.';
    END IF;
    {action}
END
$session_status$"""


def _check_purpose(purpose: str) -> None:
    if not _PURPOSE_PATTERN.fullmatch(purpose):
        raise ConfigurationError(f"invalid job purpose {purpose!r}: use ASCII letters, digits, '.', '-' and '_'")
