"""Connection draining: let in-flight work finish, then close the pool.

``GRACEFUL`` waits (polling every ``check_interval``) until every checked-out
connection is back, up to ``timeout``, then closes the pool. ``IMMEDIATE`` closes idle
connections at once and each in-use connection as it comes back, waiting up to
``timeout`` for them. ``FORCE`` closes every connection now, in use or not, without
waiting: their transactions roll back in the database and their holders get a
connection error on their next statement or COMMIT (never a silent success).

After a drain the engine is still usable: its pool was replaced by an empty one that
opens connections on demand. Call ``cleanup_database`` (``engine.dispose()``) when
shutting down for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from enum import StrEnum
from typing import Any, TypedDict

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, Pool, QueuePool
from sqlalchemy.util import greenlet_spawn

from litestar_bento_db._signals import ChainedSignalHandler
from litestar_bento_db.pool import LoopBoundPool, interrupt_driver_connection

__all__ = [
    "ConnectionDrainer",
    "DrainStats",
    "DrainingMode",
    "SignalDrain",
    "drain_connections",
    "drain_with_signal_handler",
]

logger = logging.getLogger(__name__)


class DrainingMode(StrEnum):
    """How connections are drained."""

    GRACEFUL = "graceful"
    IMMEDIATE = "immediate"
    FORCE = "force"


class DrainStats(TypedDict):
    """The result of a drain."""

    success: bool
    """True when no connection was left checked out at the end."""
    mode: str
    timeout: float
    connections_at_start: int
    """Connections checked out when the drain began."""
    connections_at_end: int
    """Connections still checked out when it ended."""
    time_taken: float
    """Seconds."""


def checked_out(pool: Pool) -> int:
    """Connections checked out of ``pool``, exact even after ``dispose()`` for our pool.

    0 for pools without figures (SQLite's NullPool and StaticPool).
    """
    if isinstance(pool, LoopBoundPool):
        return pool.checked_out_count()
    return max(pool.checkedout(), 0) if isinstance(pool, QueuePool) else 0


def _close_on_return(_dbapi: Any, record: ConnectionPoolEntry) -> None:
    if record.dbapi_connection is not None:
        record.close()


async def _retire_pool(engine: AsyncEngine) -> Pool:
    """Swap in a fresh pool; close the old one's idle connections now, the rest on return."""
    old = engine.pool
    await engine.dispose()
    # listen on the old pool only after the swap: the new pool copies the listeners
    # the old one has at dispose time
    event.listen(old, "checkin", _close_on_return)
    await greenlet_spawn(old.dispose)  # connections checked in while dispose() ran
    return old


def _force_close(pool: Pool) -> int:
    """Close checked-out connections under their holders, without waiting on them.

    The driver connection itself is ended (its adapter's ``interrupt()``: asyncpg
    ``terminate()``, psycopg a socket shutdown, asyncmy ``close()``), not SQLAlchemy's
    adapter: the adapter's force-close forgets the open transaction, and the holder's
    COMMIT would then "succeed" without reaching the server. This way the holder's next
    statement or COMMIT raises.
    """
    if not isinstance(pool, LoopBoundPool):
        return 0
    closed = 0
    for record in pool.checked_out_entries():
        with contextlib.suppress(Exception):
            closed += interrupt_driver_connection(record.dbapi_connection)
    return closed


class ConnectionDrainer:
    """Drain one engine's connections.

    Args:
        engine: The engine to drain.
        timeout: Seconds to wait for checked-out connections to come back.
        mode: GRACEFUL, IMMEDIATE or FORCE.
        check_interval: Seconds between checks while waiting.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        timeout: float = 30.0,
        mode: DrainingMode | str = DrainingMode.GRACEFUL,
        check_interval: float = 0.5,
    ) -> None:
        if timeout < 0:
            raise ValueError(f"timeout: expected a number >= 0, got {timeout}")
        if check_interval <= 0:
            raise ValueError(f"check_interval: expected a number > 0, got {check_interval}")
        self.engine = engine
        self.timeout = timeout
        self.mode = DrainingMode(mode)
        self.check_interval = check_interval

    async def _wait_for_return(self, pool: Pool, deadline: float) -> int:
        """Wait until ``pool`` has no connection out (or the deadline); return how many are.

        A checkin wakes the wait at once; ``check_interval`` bounds it otherwise.
        """
        returned = asyncio.Event()

        def on_checkin(_dbapi: Any, _record: ConnectionPoolEntry) -> None:
            returned.set()

        event.listen(pool, "checkin", on_checkin)
        try:
            while (remaining := checked_out(pool)) > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return remaining
                returned.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(returned.wait(), min(self.check_interval, left))
            return 0
        finally:
            # before any dispose(): the replacement pool copies the listeners
            event.remove(pool, "checkin", on_checkin)

    async def drain(self) -> DrainStats:
        """Drain, and report what happened."""
        started = time.monotonic()
        deadline = started + self.timeout
        pool = self.engine.pool
        at_start = checked_out(pool)
        logger.info("draining database connections: mode=%s, %d in use", self.mode, at_start)

        if self.mode is DrainingMode.GRACEFUL:
            at_end = await self._wait_for_return(pool, deadline)
            await _retire_pool(self.engine)
        elif self.mode is DrainingMode.IMMEDIATE:
            await _retire_pool(self.engine)
            at_end = await self._wait_for_return(pool, deadline)
        else:
            _force_close(pool)
            await _retire_pool(self.engine)
            # a second pass reaches connections that were mid-checkout (pre-ping) before;
            # their holders get an error on their next statement or COMMIT
            at_end = checked_out(pool) - _force_close(pool)

        stats = DrainStats(
            success=at_end == 0,
            mode=self.mode.value,
            timeout=self.timeout,
            connections_at_start=at_start,
            connections_at_end=at_end,
            time_taken=round(time.monotonic() - started, 3),
        )
        log = logger.info if stats["success"] else logger.warning
        log("database drain finished: %s", stats)
        return stats


async def drain_connections(
    engine: AsyncEngine,
    timeout: float = 30.0,
    mode: DrainingMode | str = DrainingMode.GRACEFUL,
) -> DrainStats:
    """Drain ``engine`` with a :class:`ConnectionDrainer`."""
    return await ConnectionDrainer(engine, timeout=timeout, mode=mode).drain()


class SignalDrain:
    """Drains an engine when a signal arrives; returned by :func:`drain_with_signal_handler`.

    The first signal starts a drain in ``mode``; a second one while it runs escalates
    to FORCE. Any handler installed before (a server's own) still runs on each signal.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        mode: DrainingMode,
        signals: tuple[signal.Signals, ...],
    ) -> None:
        self.engine = engine
        self.loop = loop
        self.timeout = timeout
        self.mode = mode
        self.signals = signals
        self.stats: DrainStats | None = None
        """The stats of the last finished drain."""
        self._handler = ChainedSignalHandler(signals, self._schedule, reraise_default=False)
        self._task: asyncio.Task[DrainStats] | None = None
        self._done = asyncio.Event()

    def install(self) -> None:
        """Install the handlers, remembering the previous ones."""
        self._handler.install()

    def uninstall(self) -> None:
        """Restore the previous handlers."""
        self._handler.uninstall()

    def _schedule(self, signum: int) -> None:
        # in the signal handler: hand over to the loop
        self.loop.call_soon_threadsafe(self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        if self._task is None:
            logger.info("signal %s: draining database connections", signal.Signals(signum).name)
            self._task = self.loop.create_task(self._drain(self.mode))
        elif not self._task.done():
            logger.warning("second signal %s: forcing the drain", signal.Signals(signum).name)
            self._task.cancel()
            self._task = self.loop.create_task(self._drain(DrainingMode.FORCE))

    async def _drain(self, mode: DrainingMode) -> DrainStats:
        stats = await drain_connections(self.engine, timeout=self.timeout, mode=mode)
        self.stats = stats
        self._done.set()
        return stats

    async def wait(self) -> DrainStats:
        """Wait until a signal-triggered drain has finished; return its stats."""
        await self._done.wait()
        assert self.stats is not None
        return self.stats


async def drain_with_signal_handler(
    engine: AsyncEngine,
    timeout: float = 30.0,
    mode: DrainingMode | str = DrainingMode.GRACEFUL,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> SignalDrain:
    """Drain ``engine`` once SIGTERM or SIGINT arrives (a second signal forces it).

    Call it from the running event loop. Handlers that were installed before still run,
    so a server shuts itself down as usual. Where there was none, the process keeps
    running: ``await handle.wait()`` and exit.

    Returns:
        The installed :class:`SignalDrain`.
    """
    handle = SignalDrain(engine, asyncio.get_running_loop(), timeout, DrainingMode(mode), signals)
    handle.install()
    return handle
