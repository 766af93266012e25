"""Follow the transitions that advance_session_statuses() applies, as they commit.

:class:`Listener` combines two things, because either alone loses rows:

* ``LISTEN session_status`` wakes it up as soon as a tick commits, but
  PostgreSQL does not keep notifications for a client that is not
  connected;
* the history table ``session_status_transitions`` keeps every
  transition, and ids become visible in increasing order (see the table's
  comment), so reading ``id > last_id`` after each wake-up, and after each
  reconnect, delivers every row exactly once and in id order.

The notification payload is a JSON object ``{"schema", "first_id",
"last_id", "count"}``; the listener uses it only as a wake-up, so a
notification lost while disconnected costs nothing.

Typical use::

    listener = Listener("postgresql://app@db/app", after_id=last_processed_id)
    for transition in listener:
        handle(transition)  # then persist transition.id as last_processed_id
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from session_status.config import validate_schema_name
from session_status.database import to_conninfo

logger = logging.getLogger(__name__)

CHANNEL = "session_status"
HISTORY_TABLE = "session_status_transitions"


@dataclass(frozen=True)
class Transition:
    """One row of ``session_status_transitions``."""

    id: int
    session_id: int
    from_status: str
    to_status: str
    due_at: datetime
    as_of: datetime
    applied_at: datetime


class Listener:
    """Iterate over transitions with ``id > after_id``, waiting for new ones as they commit.

    ``after_id=None`` starts after the newest transition at the first
    connection, so only later ones are delivered. ``after_id=0`` starts with
    the oldest row the retention job has kept. :attr:`last_id` is the id of
    the last transition delivered: store it to resume after a restart.

    A lost connection is logged and retried forever, waiting
    ``reconnect_delay`` seconds at first and doubling up to
    ``max_reconnect_delay``. Errors other than connection errors (a missing
    table, a privilege) are raised.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "public",
        after_id: int | None = None,
        batch_size: int = 1000,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        poll_interval: float = 60.0,
    ) -> None:
        validate_schema_name(schema)
        if after_id is not None and after_id < 0:
            raise ValueError(f"invalid after_id {after_id}: expected 0 or a positive transition id")
        if batch_size < 1:
            raise ValueError(f"invalid batch_size {batch_size}: expected a positive number of rows")
        self.conninfo = to_conninfo(conninfo)
        self.schema = schema
        self.last_id = after_id
        self.batch_size = batch_size
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        # A safety net: the history is read again after this many seconds
        # even without a notification.
        self.poll_interval = poll_interval
        self.reconnects = 0
        self._conn: psycopg.Connection | None = None
        self._query = sql.SQL(
            "SELECT id, session_id, from_status, to_status, due_at, as_of, applied_at "
            "FROM {table} WHERE id > %s ORDER BY id LIMIT %s"
        ).format(table=sql.Identifier(schema, HISTORY_TABLE))

    def __iter__(self) -> Iterator[Transition]:
        return self.transitions()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the current connection, or None when disconnected."""
        if self._conn is None or self._conn.closed:
            return None
        return self._conn.info.backend_pid

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def transitions(self, *, idle_timeout: float | None = None, catch_up_only: bool = False) -> Iterator[Transition]:
        """Yield transitions in id order, each once.

        With ``catch_up_only`` the iterator stops once it has delivered
        every committed transition. With ``idle_timeout`` it stops after
        that many seconds without a new transition. Otherwise it runs until
        the caller stops iterating.
        """
        idle_since = time.monotonic()
        delay = self.reconnect_delay
        while True:
            try:
                conn = self.connect()
                delivered = False
                for transition in self._catch_up(conn):
                    delivered = True
                    yield transition
                delay = self.reconnect_delay
                if delivered:
                    idle_since = time.monotonic()
                if catch_up_only:
                    return
                wait = self.poll_interval
                if idle_timeout is not None:
                    remaining = idle_timeout - (time.monotonic() - idle_since)
                    if remaining <= 0:
                        return
                    wait = min(wait, remaining)
                for notification in conn.notifies(timeout=wait, stop_after=1):
                    logger.debug("notification on %s: %s", notification.channel, notification.payload)
            except psycopg.OperationalError as error:
                self.close()
                self.reconnects += 1
                logger.warning(
                    "lost the connection to the transition history after id %s (%s); reconnecting in %.1f s",
                    self.last_id,
                    " ".join(str(error).split()),
                    delay,
                )
                if idle_timeout is not None and time.monotonic() - idle_since + delay > idle_timeout:
                    return
                time.sleep(delay)
                delay = min(delay * 2, self.max_reconnect_delay)

    def run(
        self,
        callback: Callable[[Transition], object],
        *,
        idle_timeout: float | None = None,
        catch_up_only: bool = False,
    ) -> int:
        """Call ``callback`` for each transition and return how many were delivered."""
        count = 0
        for transition in self.transitions(idle_timeout=idle_timeout, catch_up_only=catch_up_only):
            callback(transition)
            count += 1
        return count

    def connect(self) -> psycopg.Connection:
        """Return the open connection, connecting and running LISTEN first when there is none.

        Iterating connects on demand; call this first to fix the starting
        point of ``after_id=None`` before later ticks commit.
        """
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = psycopg.connect(self.conninfo, autocommit=True)
        try:
            # LISTEN comes before the first read of the history, so a tick
            # that commits in between is seen by one or the other.
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            if self.last_id is None:
                row = conn.execute(
                    sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(sql.Identifier(self.schema, HISTORY_TABLE))
                ).fetchone()
                self.last_id = int(row[0]) if row else 0
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._warn_if_rows_hidden(conn)
        logger.info(
            "listening on channel %r for transitions in schema %r after id %s (backend pid %s)",
            CHANNEL,
            self.schema,
            self.last_id,
            conn.info.backend_pid,
        )
        return conn

    def _warn_if_rows_hidden(self, conn: psycopg.Connection) -> None:
        """Log a warning when row-level security hides the history from this role without any policy."""
        row = conn.execute(
            "SELECT c.relrowsecurity, pg_has_role(c.relowner, 'USAGE'), "
            "       (SELECT r.rolbypassrls OR r.rolsuper FROM pg_roles AS r WHERE r.rolname = current_user), "
            "       EXISTS (SELECT 1 FROM pg_policy AS p WHERE p.polrelid = c.oid), current_user "
            "FROM pg_class AS c WHERE c.oid = to_regclass(%s)",
            (sql.Identifier(self.schema, HISTORY_TABLE).as_string(conn),),
        ).fetchone()
        if row is None:
            return
        rls_on, owner, bypasses, has_policy, role = row
        if rls_on and not owner and not bypasses and not has_policy:
            logger.warning(
                "row-level security is on for %s.%s and role %r is not its owner and has no policy on it, "
                "so no transition will be delivered; add a SELECT policy for the role (see docs/observability.md)",
                self.schema,
                HISTORY_TABLE,
                role,
            )

    def _catch_up(self, conn: psycopg.Connection) -> Iterator[Transition]:
        while True:
            with conn.cursor(row_factory=class_row(Transition)) as cursor:
                rows = cursor.execute(self._query, (self.last_id, self.batch_size)).fetchall()
            for transition in rows:
                self.last_id = transition.id
                yield transition
            if len(rows) < self.batch_size:
                return
