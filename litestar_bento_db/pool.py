"""A connection pool that is safe to use from more than one event loop.

asyncpg, psycopg and asyncmy connections belong to the event loop that opened them (each
driver's adapter tells which: :mod:`litestar_bento_db.drivers`). SQLAlchemy's
``AsyncAdaptedQueuePool`` hands a pooled connection to whichever loop asks next, so an
engine used from a second loop (``asyncio.run`` twice, a CLI step before the server,
one pytest loop after another) fails with ``Task ... attached to a different loop`` or
``Event loop is closed``; pre-ping fails the same way, which is why teams turn it off.
:class:`LoopBoundPool` checks each connection's loop when it leaves the pool: a
connection of another loop is discarded without touching that loop and replaced by a
fresh one, before pre-ping runs, so pre-ping stays on.

It also keeps overflow connections for a while. ``QueuePool`` closes a connection above
``pool_size`` the moment it is returned, so a load that hovers just above ``pool_size``
opens and closes connections continuously (each costs a server backend, a login and the
driver's set-up, milliseconds of CPU on both sides). With ``overflow_idle_timeout`` the
pool keeps them while they were needed within that many seconds, and closes them once
demand has stayed at or below ``pool_size`` for that long.

And it answers overload at once. A checkout that finds every connection in use (the
pool and its overflow) waits up to ``pool_timeout`` in SQLAlchemy, so under a load the
database cannot keep up with, every excess request waits the whole ``pool_timeout`` for
its error. Here such a checkout is refused at once (``sqlalchemy.exc.TimeoutError``, a
503 with ``Retry-After`` in the plugin) when its expected wait exceeds ``pool_timeout``:
the checkouts ahead of it, times the mean time a connection is held (measured), over
the connections that can be in use. With ``max_pending``, also when that many checkouts
are waiting already.

Waiting checkouts are served in their order (:class:`~litestar_bento_db.fair_queue.FairQueue`):
a returned connection goes to the one that waited longest, not to whichever asks next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import queue as sqla_queue

from litestar_bento_db._counters import COUNTERS
from litestar_bento_db.drivers import driver_of_connection
from litestar_bento_db.fair_queue import FairQueue, running_loop
from litestar_bento_db.liveness import driver_closed
from litestar_bento_db.resilience.classification import is_driver_error, mark_database_error

__all__ = [
    "LoopBoundPool",
    "OtherLoopConnection",
    "PoolObserver",
    "connection_loop",
    "interrupt_driver_connection",
    "terminate_driver_connection",
]

logger = logging.getLogger(__name__)

#: the weight of the newest hold time in the pool's moving average
_HOLD_WEIGHT = 0.2


class OtherLoopConnection(Exception):
    """Why a pooled connection was discarded: it belongs to another event loop.

    Passed as the reason to the pool's ``invalidate`` event, so listeners can tell
    these discards from failures.
    """


def connection_loop(dbapi_connection: Any) -> asyncio.AbstractEventLoop | None:
    """The event loop a pooled connection belongs to, if it belongs to one."""
    return driver_of_connection(dbapi_connection).loop_of(dbapi_connection.driver_connection)


def _is_foreign(dbapi_connection: Any) -> asyncio.AbstractEventLoop | None:
    owner = connection_loop(dbapi_connection)
    if owner is None or owner is running_loop():
        return None
    return owner


def terminate_driver_connection(dbapi_connection: Any) -> bool:
    """Close the driver connection now, without awaiting; False when the driver cannot.

    The driver's connection, not SQLAlchemy's adapter (whose close says goodbye first).
    """
    return driver_of_connection(dbapi_connection).terminate(dbapi_connection.driver_connection)


def interrupt_driver_connection(dbapi_connection: Any) -> bool:
    """Make the holder of a checked-out connection fail at once (draining's FORCE)."""
    return driver_of_connection(dbapi_connection).interrupt(dbapi_connection.driver_connection)


def _abandon(dbapi_connection: Any, owner: asyncio.AbstractEventLoop) -> None:
    """Close a connection that belongs to another event loop, without awaiting.

    A live owner loop (another thread) closes it itself. A stopped or closed loop
    cannot run the close: the adapter closes it without one.
    """
    if owner.is_running():
        owner.call_soon_threadsafe(terminate_driver_connection, dbapi_connection)
        return
    driver_of_connection(dbapi_connection).abandon(dbapi_connection.driver_connection)


class PoolObserver(Protocol):
    """What a :class:`LoopBoundPool` reports about checkouts (for metrics)."""

    def waited(self, seconds: float) -> None:
        """A checkout got its connection after ``seconds`` (pre-ping and connect included)."""

    def timed_out(self) -> None:
        """A checkout gave up after ``pool_timeout``, or was refused at once (overload)."""


class LoopBoundPool(AsyncAdaptedQueuePool):
    """``AsyncAdaptedQueuePool`` that never hands out a connection of another event loop.

    It also keeps the entries it has handed out, so that draining can count them
    exactly (QueuePool's own figure is reset by ``dispose()``) and close them.

    Args:
        creator: Passed to ``AsyncAdaptedQueuePool``, as are the other keyword arguments.
        overflow_idle_timeout: Seconds overflow connections stay open after demand last
            exceeded ``pool_size``; 0 closes each one when it is returned (SQLAlchemy's
            behaviour). Checked whenever a connection is returned. ``create_engine`` passes
            it through under the same name.
        max_pending: Checkouts that may wait for a connection at once; a checkout
            beyond is refused at once. -1: no limit (the expected wait still decides).
    """

    # Built on QueuePool's subclass interface (``_do_get``, ``_do_return_conn``,
    # ``_close_connection``, ``recreate``) and state (``_pool``, ``_overflow``,
    # ``_max_overflow``, ``_dec_overflow``, ``_queue_class`` and the arguments ``recreate``
    # passes on): tests/test_upstream_pins.py checks each against the SQLAlchemy installed.

    _queue_class = FairQueue[ConnectionPoolEntry]
    _pool: FairQueue[ConnectionPoolEntry]

    def __init__(
        self,
        creator: Any,
        overflow_idle_timeout: float = 0.0,
        observer: PoolObserver | None = None,
        max_pending: int = -1,
        **kw: Any,
    ) -> None:
        super().__init__(creator, **kw)
        self.observer = observer
        """Told how long each checkout waited, and of each that timed out (metrics)."""
        self._disposed = False
        # each entry handed out, with when (time.monotonic())
        self._checked_out: dict[ConnectionPoolEntry, float] = {}
        self._getting = 0
        self._waiting = 0  # checkouts that found every connection in use
        self._max_pending = max_pending
        self._mean_hold = 0.0  # seconds a connection is held, a moving average
        self._nominal_size = self._pool.maxsize
        self._overflow_idle_timeout = overflow_idle_timeout
        self._overflow_needed_at = 0.0
        if overflow_idle_timeout > 0 and self._max_overflow > 0 and self._nominal_size > 0:
            # room for every connection: returning an overflow one no longer closes it
            capacity = self._nominal_size + self._max_overflow
            self._pool = self._queue_class(capacity, use_lifo=self._pool.use_lifo)
        # a connection handed to a checkout cancelled before it ran comes back as returned
        self._pool.give_back = self._do_return_conn

    @classmethod
    def engine_kwargs(cls, *, overflow_idle_timeout: float, max_pending: int) -> dict[str, Any]:
        """The ``create_async_engine`` arguments that select this pool."""
        return {
            "poolclass": cls,
            "overflow_idle_timeout": overflow_idle_timeout,
            "max_pending": max_pending,
        }

    def size(self) -> int:
        """``pool_size``, the number of connections kept open however low the demand."""
        return self._nominal_size

    @property
    def max_overflow(self) -> int:
        """Connections allowed above ``pool_size`` (-1: no limit)."""
        return self._max_overflow

    def checkedout(self) -> int:
        """Connections checked out (``QueuePool``'s figure, with the nominal size)."""
        return self._nominal_size - self._pool.qsize() + self._overflow

    def recreate(self) -> LoopBoundPool:
        """A new, empty pool with the same settings (``dispose()`` uses it)."""
        self.logger.info("Pool recreating")
        return self.__class__(
            self._creator,
            overflow_idle_timeout=self._overflow_idle_timeout,
            observer=self.observer,
            max_pending=self._max_pending,
            pool_size=self._nominal_size,
            max_overflow=self._max_overflow,
            pre_ping=self._pre_ping,
            use_lifo=self._pool.use_lifo,
            timeout=self._timeout,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )

    def connect(self) -> PoolProxiedConnection:
        """Check out a connection; a driver's unwrapped connect error is marked as such."""
        started = time.perf_counter()
        try:
            connection = super().connect()
        except sa_exc.TimeoutError:
            if self.observer is not None:
                self.observer.timed_out()
            raise
        except OSError as error:  # asyncpg raises OSError/TimeoutError at connect unwrapped
            mark_database_error(error)
            raise
        except Exception as error:
            if not is_driver_error(error):
                raise
            # a driver error SQLAlchemy let through unwrapped (asyncpg's errors at
            # connect, before SQLAlchemy 2.1): raise it the way SQLAlchemy raises others
            raise sa_exc.OperationalError(None, None, error) from error
        if self.observer is not None:
            self.observer.waited(time.perf_counter() - started)
        return connection

    def pending(self) -> int:
        """Checkouts waiting for a connection (or for one being opened) right now."""
        return self._getting

    def _close_idle_overflow(self) -> None:
        """Close idle connections above ``pool_size`` once they were not needed for a while."""
        if self._overflow_idle_timeout <= 0 or self._overflow <= 0 or self._pool.qsize() == 0:
            return
        if time.monotonic() - self._overflow_needed_at < self._overflow_idle_timeout:
            return
        while self._overflow > 0:
            try:
                record = self._pool.get(False)
            except sqla_queue.Empty:
                return
            try:
                record.close()
            finally:
                self._dec_overflow()

    def checked_out_entries(self) -> frozenset[ConnectionPoolEntry]:
        """The entries currently checked out of this pool (it may be disposed already)."""
        return frozenset(self._checked_out)

    def checked_out_count(self) -> int:
        """Connections handed out, or being opened for a checkout, right now."""
        return len(self._checked_out) + self._getting

    def dispose(self) -> None:
        """Close the idle connections; those checked out are closed when they come back.

        (``QueuePool`` would queue them again in this pool, which the engine no longer
        uses: open until garbage-collected, and without their ``close`` event.)
        """
        self._disposed = True
        super().dispose()

    def expected_wait(self) -> float:
        """Seconds a checkout arriving now would wait for a connection; 0 while one is free.

        An estimate: the checkouts ahead, times the mean hold time, over the connections
        that can be in use.
        """
        if not self._all_in_use():
            return 0.0
        in_use = max(1, self._nominal_size + self._max_overflow)
        return (self._waiting + 1) * self._mean_hold / in_use

    def _all_in_use(self) -> bool:
        # QueuePool's own test for a checkout that has to wait (``_do_get``)
        full = self._max_overflow > -1 and self._overflow >= self._max_overflow
        return full and self._pool.qsize() == 0

    def _refuse_if_overloaded(self) -> None:
        """Raise ``TimeoutError`` at once for a checkout that would wait in vain."""
        if 0 <= self._max_pending <= self._waiting:
            reason = f"{self._waiting} checkouts are waiting already (max_pending)"
        else:
            expected = self.expected_wait()
            if expected <= self._timeout:
                return
            limit = f"pool_timeout ({self._timeout:g} s)"
            reason = f"the expected wait, {expected:.2f} s, exceeds {limit}"
        # counted by connect(), as every TimeoutError of a checkout
        raise sa_exc.TimeoutError(
            f"every connection of the pool is in use and {reason}: refused at once"
        )

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        taken = self._checked_out.pop(record, None)
        if taken is not None:  # a moving average, about the last 5 checkouts weighing most
            held = time.monotonic() - taken
            self._mean_hold += (held - self._mean_hold) * _HOLD_WEIGHT
        if self._disposed:
            record.close()
            return
        super()._do_return_conn(record)
        self._close_idle_overflow()

    def _do_get(self) -> ConnectionPoolEntry:
        waits = self._all_in_use()
        if waits:
            self._refuse_if_overloaded()
            self._waiting += 1
        self._getting += 1  # a new connection is opened inside _do_get: count it already
        try:
            record = self._get_same_loop()
        finally:
            self._getting -= 1
            if waits:
                self._waiting -= 1
        self._checked_out[record] = time.monotonic()
        if len(self._checked_out) > self._nominal_size:
            self._overflow_needed_at = time.monotonic()
        return record

    def _get_same_loop(self) -> ConnectionPoolEntry:
        record = super()._do_get()
        connection = record.dbapi_connection
        owner = _is_foreign(connection) if connection is not None else None
        if owner is not None:
            logger.debug("discarding pooled connection of another event loop")
            COUNTERS.discard("other_loop")
            # closes it through _close_connection below; the record reconnects on checkout
            record.invalidate(OtherLoopConnection("the connection belongs to another event loop"))
        return record

    def _close_connection(self, connection: Any, *, terminate: bool = False) -> None:
        owner = _is_foreign(connection)
        if owner is not None:
            _abandon(connection, owner)
            return
        if terminate or driver_closed(connection):
            # invalidated as broken, or closed by the server already: close it now.
            # SQLAlchemy's adapter first tries a goodbye that waits up to 2 s for an
            # answer a stalled server never sends, holding the pool slot that long.
            try:
                terminate_driver_connection(connection)
            except Exception:
                self.logger.debug("terminating a broken connection failed", exc_info=True)
            return
        super()._close_connection(connection, terminate=False)
