"""A connection pool that is safe to use from more than one event loop.

asyncpg and asyncmy connections belong to the event loop that opened them. SQLAlchemy's
``AsyncAdaptedQueuePool`` hands a pooled connection to whichever loop asks next, so an
engine used from a second loop (``asyncio.run`` twice, a CLI step before the server,
one pytest loop after another) fails with ``Task ... attached to a different loop`` or
``Event loop is closed``; pre-ping fails the same way, which is why seed-001 turned it
off. :class:`LoopBoundPool` checks each connection's loop when it leaves the pool: a
connection of another loop is discarded without touching that loop and replaced by a
fresh one, before pre-ping runs, so pre-ping stays on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.pool.base import _ConnectionRecord

__all__ = ["LoopBoundPool", "connection_loop"]

logger = logging.getLogger(__name__)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def connection_loop(dbapi_connection: Any) -> asyncio.AbstractEventLoop | None:
    """The event loop a pooled asyncpg or asyncmy connection belongs to, if known."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    loop = getattr(driver, "loop", None) or getattr(driver, "_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


def _is_foreign(dbapi_connection: Any) -> asyncio.AbstractEventLoop | None:
    owner = connection_loop(dbapi_connection)
    if owner is None or owner is _running_loop():
        return None
    return owner


def _abandon(dbapi_connection: Any, owner: asyncio.AbstractEventLoop) -> None:
    """Close a connection that belongs to another event loop, without awaiting.

    A live owner loop (another thread) closes it itself. A stopped or closed loop
    cannot run the close, so the socket is closed here, as the loop would have done.
    """
    force_close = dbapi_connection._terminate_force_close
    if owner.is_running():
        owner.call_soon_threadsafe(force_close)
        return
    try:
        force_close()
    except RuntimeError:
        # the closed loop refused to schedule the transport's final callback: run it
        transport = getattr(dbapi_connection.driver_connection, "_transport", None)
        if transport is not None:
            with contextlib.suppress(RuntimeError):
                transport._call_connection_lost(None)


class LoopBoundPool(AsyncAdaptedQueuePool):
    """``AsyncAdaptedQueuePool`` that never hands out a connection of another event loop.

    It also keeps the entries it has handed out, so that draining can count them
    exactly (QueuePool's own figure is reset by ``dispose()``) and close them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._checked_out: set[ConnectionPoolEntry] = set()
        self._getting = 0

    def checked_out_entries(self) -> frozenset[ConnectionPoolEntry]:
        """The entries currently checked out of this pool (it may be disposed already)."""
        return frozenset(self._checked_out)

    def checked_out_count(self) -> int:
        """Connections handed out, or being opened for a checkout, right now."""
        return len(self._checked_out) + self._getting

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        self._checked_out.discard(record)
        super()._do_return_conn(record)

    def _do_get(self) -> ConnectionPoolEntry:
        self._getting += 1  # a new connection is opened inside _do_get: count it already
        try:
            record = self._get_same_loop()
        finally:
            self._getting -= 1
        self._checked_out.add(record)
        return record

    def _get_same_loop(self) -> ConnectionPoolEntry:
        record = super()._do_get()
        connection = record.dbapi_connection
        owner = _is_foreign(connection) if connection is not None else None
        if owner is not None:
            logger.debug("discarding pooled connection of another event loop")
            _abandon(connection, owner)
            # a record without a connection reconnects when it is checked out
            assert isinstance(record, _ConnectionRecord)
            record.dbapi_connection = None
        return record

    def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
        owner = _is_foreign(connection)
        if owner is not None:
            _abandon(connection, owner)
            return
        super()._close_connection(connection, terminate=terminate)
