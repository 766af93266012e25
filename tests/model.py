"""A pure-Python reference model of the sessions table, its guard trigger and the tick.

It mirrors session_status/sql/0001_sessions_schema.upgrade.sql and
0003_advance_function.upgrade.sql rule for rule, so a property test can run
the same steps on both and compare every row:

* constraints: ends_at > starts_at, both finite, a known status, capacity > 0;
* the guard (BEFORE UPDATE OF status, only when the status changes): a new
  status 'scheduled' needs starts_at > now() of the transaction; otherwise
  a completed or cancelled row cannot change status; a status change
  stamps status_changed_at with now(). The guard runs before the
  constraints are checked, so its error wins when both would fail;
* the tick at as_of: scheduled, open and full rows with ends_at <= as_of
  become completed; then scheduled rows with starts_at <= as_of < ends_at
  become open.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

STATUSES = ("scheduled", "open", "full", "completed", "cancelled")
FINAL_STATUSES = ("completed", "cancelled")
LIVE_STATUSES = ("scheduled", "open", "full")


class Rejected(Exception):
    """An UPDATE that the database rejects; ``constraint`` is None for the guard trigger."""

    def __init__(self, constraint: str | None) -> None:
        super().__init__(constraint or "sessions_guard_status")
        self.constraint = constraint


@dataclass(frozen=True)
class Session:
    id: int
    starts_at: datetime
    ends_at: datetime
    status: str
    status_changed_at: datetime

    def as_row(self) -> tuple[int, datetime, datetime, str, datetime]:
        return (self.id, self.starts_at, self.ends_at, self.status, self.status_changed_at)


def _check_constraints(session: Session) -> None:
    if session.status not in STATUSES:
        raise Rejected("sessions_status_check")
    if not session.ends_at > session.starts_at:
        raise Rejected("sessions_ends_at_after_starts_at_check")


class Model:
    """The sessions table as the database would hold it after the same statements."""

    def __init__(self) -> None:
        self.sessions: dict[int, Session] = {}
        self._next_id = 1

    def insert(self, starts_at: datetime, ends_at: datetime, status: str, now: datetime) -> int:
        session = Session(self._next_id, starts_at, ends_at, status, now)
        _check_constraints(session)
        self.sessions[session.id] = session
        self._next_id += 1
        return session.id

    def update(
        self,
        session_id: int,
        now: datetime,
        *,
        status: str | None = None,
        starts_at: datetime | None = None,
        ends_at: datetime | None = None,
    ) -> None:
        """Apply ``UPDATE sessions SET <given columns> WHERE id = session_id`` in a transaction at ``now``."""
        old = self.sessions[session_id]
        new = replace(
            old,
            status=old.status if status is None else status,
            starts_at=old.starts_at if starts_at is None else starts_at,
            ends_at=old.ends_at if ends_at is None else ends_at,
        )
        if status is not None and new.status != old.status:
            if new.status == "scheduled":
                if new.starts_at <= now:
                    raise Rejected(None)
            elif old.status in FINAL_STATUSES:
                raise Rejected(None)
            new = replace(new, status_changed_at=now)
        _check_constraints(new)
        self.sessions[session_id] = new

    def tick(self, as_of: datetime, now: datetime) -> tuple[int, int]:
        """Apply advance_session_statuses(as_of) in a transaction at ``now``; return (opened, completed)."""
        completed = 0
        for session in list(self.sessions.values()):
            if session.status in LIVE_STATUSES and session.ends_at <= as_of:
                self.sessions[session.id] = replace(session, status="completed", status_changed_at=now)
                completed += 1
        opened = 0
        for session in list(self.sessions.values()):
            if session.status == "scheduled" and session.starts_at <= as_of < session.ends_at:
                self.sessions[session.id] = replace(session, status="open", status_changed_at=now)
                opened += 1
        return opened, completed

    def rows(self) -> list[tuple[int, datetime, datetime, str, datetime]]:
        return [self.sessions[i].as_row() for i in sorted(self.sessions)]
