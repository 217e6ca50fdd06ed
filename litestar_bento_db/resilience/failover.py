"""A primary that is not one any more: writes refused as read-only mean the primary moved.

After a failover or a switchover, a connection made through a DNS name or a virtual IP
can reach the old primary, now a standby (or a server switched to read-only): every
write is refused (PostgreSQL SQLSTATE 25006; MySQL/MariaDB 1290, 1792, 1836), pre-ping
passes, and SQLAlchemy sees no disconnect, so the pool keeps those connections for ever.

On an engine whose URL is expected to reach the primary
(:attr:`~litestar_bento_db.DatabaseConfig.expect_writable`), :class:`PrimaryWatch`
makes such a refusal a disconnect through SQLAlchemy's ``handle_error`` event, with the
pool invalidated: every connection opened before is replaced at its next checkout, as
SQLAlchemy does for a lost server (a refusal on a connection older than the pool's last
invalidation replaces that connection alone: SQLAlchemy's own rule). The first refusal
of an *event* is logged once at WARNING and counted (``bento_db.primary.moves``); an
event ends after ``quiet`` seconds without a refusal. A statement the app itself marked
read-only (``postgresql_readonly``) is left alone.

Every refusal is counted (``bento_db.primary.read_only_refusals``). The request is
answered 503 + ``Retry-After`` (category READ_ONLY: nothing was written). Replica
engines do not install it: a read-only refusal there sends the read to the primary
(:mod:`litestar_bento_db.replicas.routing`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Final

from sqlalchemy.engine import ExceptionContext

from litestar_bento_db._counters import COUNTERS
from litestar_bento_db.resilience.classification import DatabaseErrorClassifier, reported
from litestar_bento_db.resilience.codes import ErrorCategory

__all__ = ["QUIET", "PrimaryWatch"]

logger = logging.getLogger(__name__)

#: seconds without a refusal after which the next one is a new event
QUIET: Final = 10.0


class PrimaryWatch:
    """Turns read-only refusals on a primary engine into pool invalidation.

    Args:
        pool_name: The pool's name, for the log and the counters (never a password).
        quiet: Seconds without a refusal that end an event.
    """

    def __init__(self, pool_name: str, *, quiet: float = QUIET) -> None:
        self.pool_name = pool_name
        self.quiet = quiet
        self.last_refusal: float | None = None
        """``time.monotonic()`` of the latest refusal."""
        self._lock = threading.Lock()

    def on_handle_error(self, context: ExceptionContext) -> None:
        """SQLAlchemy's ``handle_error``: a read-only refusal is a disconnect (see module)."""
        if context.connection is None or context.is_disconnect:
            return
        execution = context.execution_context
        if execution is not None and execution.execution_options.get("postgresql_readonly"):
            return  # the app asked for a read-only transaction
        error = context.sqlalchemy_exception or context.original_exception
        if DatabaseErrorClassifier.classify(error) is not ErrorCategory.READ_ONLY:
            return
        context.is_disconnect = True  # and invalidate_pool_on_disconnect, by default
        now = time.monotonic()
        with self._lock:
            COUNTERS.read_only_refusal(self.pool_name)
            new_event = self.last_refusal is None or now - self.last_refusal > self.quiet
            self.last_refusal = now
            if new_event:
                COUNTERS.primary_move(self.pool_name)
        if new_event:
            report = reported(error)
            logger.warning(
                "the primary %s refused a write as read-only (code %s): it is a standby or "
                "read-only now (failover or switchover?); replacing every pooled connection",
                self.pool_name,
                report.code if report else "?",
            )
