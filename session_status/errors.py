"""Exceptions raised by session-status.

Every error is a :class:`SessionStatusError`. It subclasses Alembic's
``CommandError`` so that ``alembic upgrade`` prints ``FAILED: <message>``
instead of a traceback when a revision rejects its configuration or the
server it runs against.
"""

from __future__ import annotations

from alembic.util import CommandError


class SessionStatusError(CommandError):
    """Base class of every error raised by session-status."""


class ConfigurationError(SessionStatusError):
    """A setting (schema, schedule, URL, ...) is invalid."""


class PreflightError(SessionStatusError):
    """The server cannot run the automation; nothing was changed."""


class PrivilegeError(PreflightError):
    """The connecting role lacks a grant that the automation needs."""


class SandboxError(SessionStatusError):
    """The throwaway local PostgreSQL could not be set up or started."""
