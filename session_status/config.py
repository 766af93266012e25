"""Settings of the migrations: where they come from and how they are validated.

A value is read, first match wins, from

1. Alembic's ``-x name=value`` arguments,
2. the ``[session_status]`` section of the ``alembic.ini`` in use,
3. the defaults below.

Every value is validated before a revision changes anything, so a typo in a
schedule or a hostile schema name fails the upgrade with nothing applied.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.dialects import postgresql

from session_status.errors import ConfigurationError

logger = logging.getLogger(__name__)

INI_SECTION = "session_status"

DEFAULT_SCHEMA = "public"
DEFAULT_SCHEDULE = "* * * * *"
DEFAULT_BATCH_SIZE = 10_000
MAX_BATCH_SIZE = 1_000_000
# How long transition history rows and pg_cron run records of this package are kept.
DEFAULT_RETENTION = "14 days"

# PostgreSQL truncates identifiers longer than NAMEDATALEN - 1 = 63 bytes.
MAX_IDENTIFIER_BYTES = 63

# Unquoted-identifier characters only. Quoting would make any character safe,
# but names that need quoting are a trap for every hand-written query an app
# runs against the schema, so they are rejected instead. That rules out
# upper-case letters (PostgreSQL folds unquoted names to lower case) and
# reserved words as well.
_SCHEMA_PATTERN = re.compile(r"[a-z_][a-z0-9_]*")
_BATCH_SIZE_PATTERN = re.compile(r"[0-9]{1,10}")
# pg_cron stores the schedule as text; the longest useful expression (every
# value listed in all five fields) is about 250 characters.
MAX_SCHEDULE_LENGTH = 256

_KNOWN_KEYS = ("schema", "schedule", "batch_size", "cron_database_url", "row_level_security", "retention")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    """Validated settings used by the revisions."""

    schema: str = DEFAULT_SCHEMA
    schedule: str = DEFAULT_SCHEDULE
    batch_size: int = DEFAULT_BATCH_SIZE
    # libpq or SQLAlchemy URL of pg_cron's database, for servers where it is
    # not the app database. None derives it from the app connection.
    cron_database_url: str | None = None
    # Enable row-level security on the sessions table when it is created.
    row_level_security: bool = True
    # Age after which the retention jobs delete transition history rows and
    # this package's rows of cron.job_run_details: a PostgreSQL interval.
    retention: str = DEFAULT_RETENTION

    def __post_init__(self) -> None:
        validate_schema_name(self.schema)
        validate_schedule(self.schedule)
        validate_retention(self.retention)
        if self.cron_database_url is not None:
            validate_cron_database_url(self.cron_database_url)
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise ConfigurationError(f"invalid batch_size {self.batch_size!r}: expected a whole number")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ConfigurationError(
                f"invalid batch_size {self.batch_size}: it must be between 1 and {MAX_BATCH_SIZE}; "
                f"the default is {DEFAULT_BATCH_SIZE}"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> Settings:
        """Build settings from string values, as given by ``-x`` or an ini section."""
        unknown = sorted(set(values) - set(_KNOWN_KEYS))
        if unknown:
            raise ConfigurationError(
                f"unknown session-status setting(s) {', '.join(map(repr, unknown))}; "
                f"known settings are {', '.join(_KNOWN_KEYS)}"
            )
        kwargs: dict[str, object] = {}
        if values.get("schema"):
            kwargs["schema"] = values["schema"]
        if values.get("schedule"):
            kwargs["schedule"] = values["schedule"]
        if values.get("batch_size"):
            raw = values["batch_size"].strip()
            # int() would also take "1_000", "+5" and non-ASCII digits.
            if not _BATCH_SIZE_PATTERN.fullmatch(raw):
                raise ConfigurationError(
                    f"invalid batch_size {values['batch_size']!r}: expected a whole number between 1 and "
                    f"{MAX_BATCH_SIZE} written with the digits 0-9"
                )
            kwargs["batch_size"] = int(raw)
        if values.get("row_level_security"):
            raw = values["row_level_security"].strip().lower()
            if raw not in _TRUE | _FALSE:
                raise ConfigurationError(
                    f"invalid row_level_security {values['row_level_security']!r}: expected true or false"
                )
            kwargs["row_level_security"] = raw in _TRUE
        if values.get("retention"):
            kwargs["retention"] = values["retention"].strip()
        if values.get("cron_database_url"):
            kwargs["cron_database_url"] = values["cron_database_url"]
        return cls(**kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_alembic(cls) -> Settings:
        """Read the settings of the running Alembic command."""
        from alembic import context

        merged: dict[str, str] = {}
        config = context.config
        if config.file_config.has_section(INI_SECTION):
            merged.update(dict(config.file_config.items(INI_SECTION, raw=True)))
            # ConfigParser adds the [DEFAULT] section's keys, such as "here".
            for key in config.file_config.defaults():
                merged.pop(key, None)
        x_arguments = context.get_x_argument(as_dictionary=True)
        unknown = sorted(set(x_arguments) - set(_KNOWN_KEYS))
        if unknown:
            # -x is shared with the host app's own env.py, so unknown keys are
            # not an error; a misspelt setting still deserves a word.
            logger.warning(
                "ignoring -x argument(s) %s: session-status reads only %s",
                ", ".join(unknown),
                ", ".join(_KNOWN_KEYS),
            )
        # An empty -x value (an unset shell variable, say) leaves the ini value in force.
        merged.update({key: value for key, value in x_arguments.items() if key in _KNOWN_KEYS and value})
        return cls.from_mapping(merged)

    def quoted_schema(self) -> str:
        """Return the schema name quoted as a PostgreSQL identifier."""
        return quote_identifier(self.schema)


def quote_identifier(name: str) -> str:
    """Quote ``name`` as a PostgreSQL identifier with SQLAlchemy's quoting rules."""
    preparer = postgresql.dialect().identifier_preparer
    return preparer.quote_identifier(name)


def quote_literal(value: str) -> str:
    """Quote ``value`` as a PostgreSQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def validate_schema_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigurationError("invalid schema: the name is empty; set -x schema=NAME or leave it unset for 'public'")
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ConfigurationError(
            f"invalid schema {name!r}: {len(name.encode())} bytes is longer than PostgreSQL's "
            f"{MAX_IDENTIFIER_BYTES}-byte identifier limit"
        )
    if not _SCHEMA_PATTERN.fullmatch(name):
        raise ConfigurationError(
            f"invalid schema {name!r}: use lower-case letters a-z, digits and underscores, "
            "starting with a letter or an underscore"
        )
    if name.startswith("pg_"):
        raise ConfigurationError(f"invalid schema {name!r}: names starting with 'pg_' are reserved by PostgreSQL")
    if name in {"information_schema", "cron"}:
        raise ConfigurationError(
            f"invalid schema {name!r}: it belongs to PostgreSQL or pg_cron "
            "(pg_dump skips information_schema, and DROP EXTENSION pg_cron would take the tables along)"
        )
    if postgresql.dialect().identifier_preparer.quote(name) != name:
        raise ConfigurationError(
            f"invalid schema {name!r}: it is a reserved word in SQL and would need quoting in every query; "
            "choose another name"
        )


def validate_cron_database_url(url: str) -> None:
    """Check that ``url`` is a PostgreSQL URL that SQLAlchemy can parse."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if any(ord(character) < 32 for character in url):
        raise ConfigurationError("invalid cron_database_url: it contains control characters")
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise ConfigurationError(f"invalid cron_database_url: {error}") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"invalid cron_database_url: expected a postgresql:// URL, got the scheme {parsed.drivername!r}"
        )
    if not parsed.database:
        raise ConfigurationError("invalid cron_database_url: it names no database; add /DATABASE to the URL")


_RETENTION_PATTERN = re.compile(
    r"(?: *([0-9]{1,6}) *(minutes?|hours?|days?|weeks?|months?|years?))+ *", re.IGNORECASE | re.ASCII
)
_RETENTION_TERM = re.compile(r"([0-9]+) *([a-z]+)", re.IGNORECASE | re.ASCII)


def validate_retention(retention: str) -> None:
    """Check a retention age such as ``'14 days'`` or ``'1 month 12 hours'``.

    Only whole numbers of minutes, hours, days, weeks, months and years are
    accepted: each is a valid PostgreSQL interval, and the value is pasted
    into the retention jobs' commands as a quoted literal.
    """
    if not isinstance(retention, str) or not _RETENTION_PATTERN.fullmatch(retention):
        raise ConfigurationError(
            f"invalid retention {retention!r}: expected an interval such as '14 days' or '1 month', "
            f"in whole minutes, hours, days, weeks, months or years; the default is {DEFAULT_RETENTION!r}"
        )
    if all(int(number) == 0 for number, _unit in _RETENTION_TERM.findall(retention)):
        raise ConfigurationError(
            f"invalid retention {retention!r}: it must be longer than zero; the default is {DEFAULT_RETENTION!r}"
        )


# -- cron schedules -------------------------------------------------------------

_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MONTH_NAMES = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}
_DAY_NAMES = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
_SECONDS_PATTERN = re.compile(r"([1-9]|[1-5][0-9]) seconds?")
_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"}


def validate_schedule(schedule: str) -> None:
    """Check a pg_cron schedule before it reaches the server.

    Accepts five-field cron expressions (numbers, month and day names,
    ``*``, ranges, steps and lists), the ``@hourly``-style macros and
    ``'N seconds'``. Whether the server's pg_cron supports seconds (1.5 and
    later) is checked against the server when the job is scheduled.
    """
    if not isinstance(schedule, str) or not schedule.strip():
        raise ConfigurationError("invalid schedule: it is empty; the default is '* * * * *' (every minute)")
    if len(schedule) > MAX_SCHEDULE_LENGTH:
        raise ConfigurationError(
            f"invalid schedule: {len(schedule)} characters is longer than the limit of {MAX_SCHEDULE_LENGTH}"
        )
    if not schedule.isascii() or any(character in schedule for character in "\x00\r\n\t\x0b\x0c"):
        raise ConfigurationError(f"invalid schedule {schedule!r}: use ASCII characters, with spaces between the fields")
    text = schedule.strip()
    # pg_cron compares macros and the word 'seconds' case-sensitively.
    if text in _MACROS or _SECONDS_PATTERN.fullmatch(text):
        return
    if text.lower() in _MACROS or _SECONDS_PATTERN.fullmatch(text.lower()):
        raise ConfigurationError(f"invalid schedule {schedule!r}: write it in lower case, as {text.lower()!r}")
    if text == "@reboot":
        raise ConfigurationError(
            "invalid schedule '@reboot': the job must run periodically; use a cron expression such as '* * * * *'"
        )
    fields = text.split()
    if len(fields) != 5:
        raise ConfigurationError(
            f"invalid schedule {schedule!r}: expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)}; for example '* * * * *' runs every minute"
        )
    for field_text, name, bounds in zip(fields, _FIELD_NAMES, _FIELD_RANGES, strict=True):
        names: Mapping[str, int] = {}
        if name == "month":
            names = _MONTH_NAMES
        elif name == "day of week":
            names = _DAY_NAMES
        _validate_field(schedule, field_text, name, bounds, names)


def _validate_field(
    schedule: str, field_text: str, name: str, bounds: tuple[int, int], names: Mapping[str, int]
) -> None:
    low, high = bounds

    def value(token: str) -> int:
        if token.lower() in names:
            return names[token.lower()]
        if not (token.isascii() and token.isdigit()):
            raise ConfigurationError(f"invalid schedule {schedule!r}: {name} field has invalid value {token!r}")
        number = int(token)
        if not low <= number <= high:
            raise ConfigurationError(f"invalid schedule {schedule!r}: {name} {number} is outside {low}-{high}")
        return number

    for part in field_text.split(","):
        base, _, step = part.partition("/")
        if step and (not (step.isascii() and step.isdigit()) or int(step) == 0):
            raise ConfigurationError(f"invalid schedule {schedule!r}: {name} field has invalid step {step!r}")
        if base == "*":
            continue
        start, dash, end = base.partition("-")
        if step and not dash:
            # As in Vixie cron, which pg_cron's parser comes from, a step
            # follows '*' or a range, never a single value.
            raise ConfigurationError(
                f"invalid schedule {schedule!r}: {name} field {part!r} has a step after a single value; "
                f"write '*/{step}' or a range such as '{start}-{high}/{step}'"
            )
        first = value(start)
        if dash and value(end) < first:
            raise ConfigurationError(f"invalid schedule {schedule!r}: {name} range {base!r} runs backwards")
