"""Convert a session booked in local wall-clock time to the instants the tick compares.

The sessions table stores ``starts_at`` and ``ends_at`` as ``timestamptz``,
that is as instants, and ``advance_session_statuses()`` compares instants
only. An app that books "Sunday 01:00 in New York, 90 minutes" must turn that
into two instants once, when it writes the row. :func:`session_bounds` does so
with :mod:`zoneinfo` and an explicit policy for the two local times that do
not name exactly one instant:

* a **gap** (non-existent time): when clocks go forward, the skipped wall
  times never happen. The default, ``on_gap="reject"``, raises
  :class:`NonexistentLocalTimeError`. ``on_gap="shift_forward"`` moves the
  start forward by the length of the gap (02:30 on a night that skips
  02:00-03:00 becomes 03:30 in the new offset), which is also what
  PostgreSQL's ``AT TIME ZONE`` does.
* a **fold** (ambiguous time): when clocks go back, the repeated wall times
  happen twice. The default, ``on_fold="earlier"``, picks the first
  occurrence (still in daylight time); ``on_fold="later"`` picks the second.
  PostgreSQL's ``AT TIME ZONE`` picks the later one, so the defaults differ
  on purpose: a class at 01:00 on fall-back night usually means the first
  01:00.

The duration is elapsed time: ``ends_at = starts_at + duration`` on the
timeline, so a 90-minute class starting 01:00 EDT on fall-back night ends at
01:30 EST, not at 02:30 local.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from session_status.errors import SessionStatusError

logger = logging.getLogger(__name__)

GapPolicy = Literal["reject", "shift_forward"]
FoldPolicy = Literal["earlier", "later"]

__all__ = [
    "FoldPolicy",
    "GapPolicy",
    "NonexistentLocalTimeError",
    "local_to_instant",
    "session_bounds",
]


class NonexistentLocalTimeError(SessionStatusError, ValueError):
    """A local date and time that the clock skips in that time zone (a DST gap)."""


def _round_trips(local: datetime) -> bool:
    """Return whether ``local`` names a wall time that exists in its zone."""
    back = local.astimezone(UTC).astimezone(local.tzinfo)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)


def local_to_instant(
    day: date,
    wall_time: time,
    zone: str | ZoneInfo,
    *,
    on_gap: GapPolicy = "reject",
    on_fold: FoldPolicy = "earlier",
) -> datetime:
    """Return the UTC instant of the wall-clock time ``day`` ``wall_time`` in ``zone``.

    Raises :class:`NonexistentLocalTimeError` for a time in a DST gap unless
    ``on_gap="shift_forward"``, and resolves a time in a DST fold by
    ``on_fold``. ``zone`` is an IANA name such as ``"America/New_York"``; an
    unknown name raises :class:`zoneinfo.ZoneInfoNotFoundError`.
    """
    if on_gap not in ("reject", "shift_forward"):
        raise ValueError(f"invalid on_gap {on_gap!r}: expected 'reject' or 'shift_forward'")
    if on_fold not in ("earlier", "later"):
        raise ValueError(f"invalid on_fold {on_fold!r}: expected 'earlier' or 'later'")
    if wall_time.tzinfo is not None:
        raise ValueError(f"invalid wall_time {wall_time!r}: expected a naive time, the zone is given by zone")
    tz = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)

    naive = datetime.combine(day, wall_time)
    # zoneinfo follows PEP 495: fold=0 uses the offset in force before a
    # transition, fold=1 the offset after it. In a fold that gives the first
    # and the second occurrence; in a gap, fold=0 gives the wall time read
    # with the old offset, which lands after the gap (shifted forward).
    first = naive.replace(tzinfo=tz, fold=0)
    second = naive.replace(tzinfo=tz, fold=1)

    if not _round_trips(first):
        if on_gap == "reject":
            raise NonexistentLocalTimeError(
                f"invalid local time {naive.isoformat(sep=' ')} in {tz.key}: "
                "the clocks skip it (daylight saving time starts); "
                "book a time outside the gap or pass on_gap='shift_forward'"
            )
        shifted = first.astimezone(UTC)
        logger.debug("shifted non-existent local time %s %s forward to %s", naive, tz.key, shifted)
        return shifted

    chosen = first if on_fold == "earlier" else second
    return chosen.astimezone(UTC)


def session_bounds(
    day: date,
    wall_time: time,
    zone: str | ZoneInfo,
    duration: timedelta,
    *,
    on_gap: GapPolicy = "reject",
    on_fold: FoldPolicy = "earlier",
) -> tuple[datetime, datetime]:
    """Return ``(starts_at, ends_at)`` in UTC for a session booked in local time.

    ``starts_at`` is :func:`local_to_instant` of ``day``, ``wall_time`` and
    ``zone`` under ``on_gap`` and ``on_fold``. ``ends_at`` is ``starts_at``
    plus ``duration`` of elapsed time, whatever the clocks do meanwhile.
    ``duration`` must be positive, as the table's
    ``sessions_ends_at_after_starts_at_check`` requires.
    """
    if duration <= timedelta(0):
        raise ValueError(f"invalid duration {duration}: expected a positive timedelta")
    starts_at = local_to_instant(day, wall_time, zone, on_gap=on_gap, on_fold=on_fold)
    return starts_at, starts_at + duration
