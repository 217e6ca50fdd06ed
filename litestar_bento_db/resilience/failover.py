"""A primary that is not one any more: writes refused as read-only mean the primary moved.

After a failover or a switchover, a connection made through a DNS name or a virtual IP
can reach the old primary, now a standby (or a server switched to read-only): every
write is refused (PostgreSQL SQLSTATE 25006; MySQL/MariaDB 1290, 1792, 1836), pre-ping
passes, and SQLAlchemy sees no disconnect, so the pool keeps those connections for ever.

On an engine whose URL is expected to reach the primary
(:attr:`~litestar_bento_db.DatabaseConfig.expect_writable`), :class:`PrimaryWatch`
makes such a refusal a disconnect through SQLAlchemy's ``handle_error`` event:

- the first refusal of an *event* invalidates the whole pool (every connection opened
  before is replaced at its next checkout, as SQLAlchemy does for a lost server), is
  logged once at WARNING and counted (``bento_db.primary.moves``);
- a refusal on a connection opened before the event replaces that connection alone;
  one on a connection opened since (the URL still reaches a read-only server)
  invalidates the pool again, without a new log line;
- an event ends after ``quiet`` seconds without a refusal.

Every refusal is counted (``bento_db.primary.read_only_refusals``). The request is
answered 503 + ``Retry-After`` (category READ_ONLY: nothing was written). Replica
engines do not install it: a read-only refusal there sends the read to the primary
(:mod:`litestar_bento_db.replicas.routing`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Final

from sqlalchemy.engine import ExceptionContext
from sqlalchemy.pool import ConnectionPoolEntry

from litestar_bento_db._counters import COUNTERS
from litestar_bento_db.resilience.classification import DatabaseErrorClassifier, reported
from litestar_bento_db.resilience.codes import ErrorCategory

__all__ = ["OPENED_AT", "PrimaryWatch"]

logger = logging.getLogger(__name__)

#: ``connection.info`` key: ``time.monotonic()`` when the connection was opened
OPENED_AT: Final = "bento_opened_at"
#: seconds without a refusal after which the next one is a new event
QUIET: Final = 10.0


class PrimaryWatch:
    """Turns read-only refusals on a primary engine into pool invalidation (one per event).

    Args:
        pool_name: The pool's name, for the log and the counters (never a password).
        quiet: Seconds without a refusal that end an event.
    """

    def __init__(self, pool_name: str, *, quiet: float = QUIET) -> None:
        self.pool_name = pool_name
        self.quiet = quiet
        self.event_started: float | None = None
        """``time.monotonic()`` when the current (or last) event began."""
        self.last_refusal: float | None = None
        """``time.monotonic()`` of the latest refusal."""
        self.last_invalidation: float | None = None
        """``time.monotonic()`` when the pool was last invalidated for a refusal."""
        self._lock = threading.Lock()

    def on_connect(self, _dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        """Pool ``connect`` event: stamp the connection with its opening time."""
        record.info[OPENED_AT] = time.monotonic()

    def on_handle_error(self, context: ExceptionContext) -> None:
        """SQLAlchemy's ``handle_error``: a read-only refusal is a disconnect (see module)."""
        if context.connection is None or context.is_disconnect:
            return
        error = context.sqlalchemy_exception or context.original_exception
        if DatabaseErrorClassifier.classify(error) is not ErrorCategory.READ_ONLY:
            return
        opened = context.connection.info.get(OPENED_AT)
        now = time.monotonic()
        with self._lock:
            COUNTERS.read_only_refusal(self.pool_name)
            new_event = self.last_refusal is None or now - self.last_refusal > self.quiet
            self.last_refusal = now
            stale = (
                not new_event
                and self.last_invalidation is not None
                and isinstance(opened, float)
                and opened <= self.last_invalidation
            )
            context.is_disconnect = True
            # a connection from before the last invalidation: that one alone
            context.invalidate_pool_on_disconnect = not stale
            if stale:
                return
            self.last_invalidation = now
            if new_event:
                self.event_started = now
                COUNTERS.primary_move(self.pool_name)
        if new_event:
            report = reported(error)
            logger.warning(
                "the primary %s refused a write as read-only (code %s): it is a standby or "
                "read-only now (failover or switchover?); replacing every pooled connection",
                self.pool_name,
                report.code if report else "?",
            )

    @property
    def in_event(self) -> bool:
        """Whether a refusal came within the last ``quiet`` seconds."""
        last = self.last_refusal
        return last is not None and time.monotonic() - last <= self.quiet
