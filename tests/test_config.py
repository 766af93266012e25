"""Validation of the settings, before anything reaches the server."""

from __future__ import annotations

import pytest

from session_status.config import Settings, validate_schedule
from session_status.errors import ConfigurationError, PreflightError
from session_status.pgcron import ServerInfo, check_server, job_name


@pytest.mark.parametrize(
    "schedule",
    ["* * * * *", "*/5 * * * *", "0 3 * * 1-5", "15,45 8-18 * jan-dec mon-fri", "@hourly", "30 seconds", "1 second"],
)
def test_schedule_accepts_valid(schedule: str) -> None:
    validate_schedule(schedule)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("", "it is empty"),
        ("* * * *", "expected 5 fields"),
        ("60 * * * *", "minute 60 is outside 0-59"),
        ("* 24 * * *", "hour 24 is outside 0-23"),
        ("* * 0 * *", "day of month 0 is outside 1-31"),
        ("* * * 13 *", "month 13 is outside 1-12"),
        ("* * * * 8", "day of week 8 is outside 0-7"),
        ("*/0 * * * *", "invalid step '0'"),
        ("5-1 * * * *", "runs backwards"),
        ("@reboot", "must run periodically"),
        ("60 seconds", "expected 5 fields"),
        ("* * * * *; DROP TABLE sessions", "expected 5 fields"),
        ("'; select 1 --", "expected 5 fields"),
        ("x * * * *", "invalid value 'x'"),
    ],
)
def test_schedule_rejects_invalid(schedule: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid schedule") as caught:
        validate_schedule(schedule)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("", "the name is empty"),
        ("public; DROP TABLE sessions", "use lower-case letters a-z, digits and underscores"),
        ('evil"name', "use lower-case letters a-z, digits and underscores"),
        ("1abc", "use lower-case letters a-z, digits and underscores"),
        ("App", "use lower-case letters a-z, digits and underscores"),
        ("APP", "use lower-case letters a-z, digits and underscores"),
        ("sch\u00e9ma", "use lower-case letters a-z, digits and underscores"),
        ("a" * 64, "longer than PostgreSQL's 63-byte identifier limit"),
        ("pg_sessions", "reserved by PostgreSQL"),
        ("select", "reserved word in SQL"),
        ("user", "reserved word in SQL"),
        ("order", "reserved word in SQL"),
    ],
)
def test_schema_rejects_invalid(schema: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid schema") as caught:
        Settings(schema=schema)
    assert message in str(caught.value)


def test_schema_accepts_63_bytes() -> None:
    assert Settings(schema="a" * 63).quoted_schema() == '"' + "a" * 63 + '"'


@pytest.mark.parametrize("value", ["0", "-1", "1000001", "ten", "1e3"])
def test_batch_size_rejects_invalid(value: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid batch_size"):
        Settings.from_mapping({"batch_size": value})


def test_unknown_setting_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown session-status setting.*'shcema'"):
        Settings.from_mapping({"shcema": "app"})


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("off", False), ("No", False), ("1", True)])
def test_row_level_security_parsing(value: str, expected: bool) -> None:
    assert Settings.from_mapping({"row_level_security": value}).row_level_security is expected


def test_row_level_security_rejects_invalid() -> None:
    with pytest.raises(ConfigurationError, match="invalid row_level_security 'maybe'"):
        Settings.from_mapping({"row_level_security": "maybe"})


def test_job_name_short_database() -> None:
    assert job_name("app") == "session_status:app"
    assert job_name("app", "retention") == "session_status:app:retention"


def test_job_name_long_databases_stay_unique() -> None:
    first = "a" * 60 + "x"
    second = "a" * 60 + "y"

    assert len(job_name(first).encode()) <= 63
    assert len(job_name(second, "retention").encode()) <= 63
    assert job_name(first) != job_name(second)
    assert job_name(first).startswith("session_status:aaa")


def _server(**overrides: object) -> ServerInfo:
    values: dict[str, object] = {
        "current_database": "app",
        "current_user": "owner",
        "is_superuser": False,
        "preloaded": True,
        "cron_database": "postgres",
        "available_version": "1.4-1",
    }
    values.update(overrides)
    return ServerInfo(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["1.4-1", "1.4", "1.5", "1.6", "2.0"])
def test_server_check_accepts_supported_pg_cron(version: str) -> None:
    check_server(_server(available_version=version))


@pytest.mark.parametrize("version", ["1.3", "1.0"])
def test_server_check_rejects_old_pg_cron(version: str) -> None:
    with pytest.raises(PreflightError, match=rf"pg_cron {version} is too old: session-status needs 1.4"):
        check_server(_server(available_version=version))


def test_server_check_rejects_missing_extension_files() -> None:
    with pytest.raises(PreflightError, match="extension files are not installed"):
        check_server(_server(available_version=None))
