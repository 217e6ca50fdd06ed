"""The database side of a running app: engine, warm-up, readiness, shutdown drain.

One :class:`DatabaseRuntime` per worker process. It creates the engine inside the
serving event loop, opens and pings the warm-up connections concurrently, and only
then reports ready. When the database is down at startup it keeps trying in the
background with capped backoff (or raises, with ``fail_fast``). Readiness probes share
one bounded ping per ``cache_ttl`` (single-flight), so a flood of probes costs at most
one round trip and one connection per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from litestar_bento_db._signals import ChainedSignalHandler
from litestar_bento_db.draining import DrainStats, drain_connections
from litestar_bento_db.engines import get_engine_for_config
from litestar_bento_db.lifecycle import Probe, init_database, pool_status, probe
from litestar_bento_db.litestar.config import PluginConfig
from litestar_bento_db.metrics.core import REGISTRY, pool_limits
from litestar_bento_db.replicas import ReplicaSet, ReplicaWatcher
from litestar_bento_db.resilience.classification import describe_error, is_database_error

__all__ = ["DatabaseRuntime", "DatabaseStartupError", "Phase"]

logger = logging.getLogger(__name__)


class DatabaseStartupError(RuntimeError):
    """The database was not reachable at startup (``fail_fast``), or the migration failed."""


class _StartupFailed(Exception):
    """The warm-up probe failed; the message is the error's class name."""


class _MigrationFailed(Exception):
    """The startup migration failed: not retried."""


#: the startup migration: called with the engine once the database answers
Migrate = Callable[[AsyncEngine], Awaitable[object]]


class Phase(StrEnum):
    """Where the runtime is in its life."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


class DatabaseRuntime:
    """Engine and readiness for one worker process."""

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.settings = get_engine_for_config(config.database)
        """The dialect settings the engine is built from."""
        self.engine: AsyncEngine | None = None
        self.replicas = ReplicaSet(config.database) if config.database.read_replica_urls else None
        """The read replicas (None without ``read_replica_urls``)."""
        self.replica_watcher = ReplicaWatcher(self.replicas) if self.replicas else None
        self._replica_task: asyncio.Task[None] | None = None
        self._replica_stop = asyncio.Event()
        self.phase = Phase.STARTING
        self.last_error: str | None = None
        self.drain_stats: DrainStats | None = None
        self.ready_at: float | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._froze = False  # gc.freeze() called at start-up, to undo at shutdown
        self._probe: Probe | None = None
        self._probe_task: asyncio.Future[Probe] | None = None
        self.pings = 0
        """Readiness pings sent to the database (for tests and metrics)."""
        self.migrate: Migrate | None = None
        """Run after the warm-up ping, before the tables are created and before ready."""
        self._signals = ChainedSignalHandler(
            (signal.SIGTERM, signal.SIGINT), self._on_shutdown_signal, reraise_default=True
        )

    # -- startup ------------------------------------------------------------------

    def create_engine(self) -> AsyncEngine:
        """Create the engine (once), and the replicas' engines; from the serving loop."""
        if self.engine is None:
            self.engine = self.settings.create_engine()
            if self.replicas is not None:
                self.replicas.create_engines()
        return self.engine

    async def _warm_up(self) -> None:
        engine = self.create_engine()
        count = max(1, min(self.config.database.warmup_connections, self._pool_capacity()))
        result = await probe(engine, timeout=self._warm_up_timeout(), connections=count)
        if not result.ok:
            raise _StartupFailed(result.error or "unknown error")
        if self.migrate is not None:
            try:
                await self.migrate(engine)
            except Exception as exc:
                raise _MigrationFailed(_migration_error(exc)) from exc
            self.migrate = None  # done: a later warm-up (a restarted app) skips it
        if self.config.metadata is not None:
            await init_database(engine, self.config.metadata)

    def _warm_up_timeout(self) -> float:
        # connecting and one ping; the pool may queue connections behind each other
        database = self.config.database
        return database.connect_timeout + (database.command_timeout or database.connect_timeout)

    def _pool_capacity(self) -> int:
        database = self.config.database
        if not self.settings.pooled or database.max_overflow < 0:
            return database.warmup_connections
        return max(1, database.pool_size + database.max_overflow)

    def _mark_ready(self) -> None:
        self.phase = Phase.READY
        self.ready_at = time.monotonic()
        self.last_error = None
        logger.info("database ready: %s", self.config.database.safe_url)
        if self.replica_watcher is not None and self._replica_task is None:
            # readiness depends on the primary only: replicas enter rotation as the
            # watcher finds them healthy (its first round starts now); reads go to the
            # primary meanwhile
            watcher, engine = self.replica_watcher, self.create_engine()
            self._replica_task = asyncio.ensure_future(watcher.run(engine, self._replica_stop))

    @staticmethod
    def _describe(exc: BaseException) -> str:
        # never the message: driver messages can carry the user, host or SQL
        return str(exc) if isinstance(exc, _StartupFailed) else describe_error(exc)

    def _on_shutdown_signal(self, signum: int) -> None:
        if self.phase in (Phase.STARTING, Phase.READY):
            self.phase = Phase.DRAINING
            logger.info("shutdown signal: readiness now fails while requests finish")

    def _watch_shutdown_signals(self) -> None:
        """Fail readiness as soon as SIGTERM/SIGINT arrives, chaining the server's handler.

        The server lets in-flight requests finish before the lifespan shutdown runs;
        readiness must already fail meanwhile. Only from the main thread.
        """
        if threading.current_thread() is threading.main_thread():
            self._signals.install()

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._signals.uninstall()

    async def start(self) -> None:
        """Warm up; on failure raise (``fail_fast``) or keep trying in the background."""
        self.phase = Phase.STARTING  # (again, when an app is started a second time)
        self._replica_task = None
        self._replica_stop = asyncio.Event()
        self._watch_shutdown_signals()
        try:
            await self._warm_up()
        except _MigrationFailed as exc:
            self._restore_signal_handlers()
            raise DatabaseStartupError(f"database migration failed: {exc}") from None
        except Exception as exc:
            self.last_error = self._describe(exc)
            message = (
                f"database not reachable at startup: {self.config.database.safe_url} "
                f"({self.last_error})"
            )
            if self.config.fail_fast:
                self._restore_signal_handlers()
                raise DatabaseStartupError(message) from None
            logger.warning("%s; retrying in the background", message)
            self._connect_task = asyncio.ensure_future(self._keep_connecting())
        else:
            self._mark_ready()
        if self.config.freeze_gc:
            # start-up's objects leave the collector's view (no collection first: an app
            # started in a big process, a test suite's, would pay a full one each time)
            gc.freeze()
            self._froze = True

    async def _keep_connecting(self) -> None:
        delay = 0.1
        while self.phase is Phase.STARTING:
            await asyncio.sleep(delay)
            try:
                await self._warm_up()
            except _MigrationFailed as exc:  # not retried: readiness keeps failing
                self.last_error = f"migration failed: {exc}"
                logger.error("database migration failed: %s; not ready", exc)
                return
            except Exception as exc:  # reported through readiness
                self.last_error = self._describe(exc)
                delay = min(delay * 2, self.config.startup_retry_max_delay)
            else:
                if self.phase is Phase.STARTING:
                    self._mark_ready()

    # -- readiness ----------------------------------------------------------------

    async def _ping(self) -> Probe:
        self.pings += 1
        writable = self.config.database.expect_writable
        return await probe(
            self.create_engine(),
            timeout=self.config.health.readiness_timeout,
            read_only_query=self.settings.read_only_query if writable else None,
        )

    async def probe(self) -> Probe:
        """A recent ping result: cached for ``cache_ttl``, at most one ping in flight."""
        cached, ttl = self._probe, self.config.health.cache_ttl
        if cached is not None and time.monotonic() - cached.checked_at < ttl:
            return cached
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.ensure_future(self._ping())
        result = await asyncio.shield(self._probe_task)
        self._probe = result
        return result

    @property
    def last_probe(self) -> Probe | None:
        """The latest readiness ping result, if any."""
        return self._probe

    def pool_figures(self) -> dict[str, Any]:
        """The pool's figures, with waiters, timeouts and wait times when measured."""
        if self.engine is None:
            return {}
        figures = pool_status(self.engine.pool)
        metrics = REGISTRY.for_engine(self.engine)
        if metrics is not None:
            waits = metrics.wait_time
            figures.update(
                pool_waiting=pool_limits(self.engine.pool)["pending"],
                pool_timeouts=metrics.timeouts,
                pool_checkouts=waits.count,
                pool_wait_ms_avg=round(waits.sum / waits.count * 1000, 3) if waits.count else None,
            )
        return figures

    # -- shutdown -----------------------------------------------------------------

    async def stop(self) -> DrainStats | None:
        """Mark not ready, stop connecting, drain the pools (primary and replicas).

        The primary's engine is disposed after this (by advanced-alchemy's lifespan); the
        replicas' engines are disposed here.
        """
        self.phase = Phase.DRAINING
        self._restore_signal_handlers()
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
        if self._probe_task is not None and not self._probe_task.done():
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        if self._replica_task is not None:
            self._replica_stop.set()
            await self._replica_task
        if self.engine is not None:
            timeout, mode = self.config.drain_timeout, self.config.drain_mode
            drains = [
                drain_connections(engine, timeout=timeout, mode=mode)
                for engine in [self.engine, *self._replica_engines()]
            ]
            self.drain_stats, *_ = await asyncio.gather(*drains)
        if self.replicas is not None:
            await self.replicas.dispose()
        if self._froze:  # what start-up froze can be collected again
            gc.unfreeze()
            self._froze = False
        self.phase = Phase.STOPPED
        return self.drain_stats

    def _replica_engines(self) -> list[AsyncEngine]:
        replicas = self.replicas.replicas if self.replicas is not None else ()
        return [replica.engine for replica in replicas if replica.engine is not None]


def _migration_error(exc: BaseException) -> str:
    """The migration's error; a database error by class and code only (no message)."""
    if is_database_error(exc):
        return describe_error(exc)
    return f"{type(exc).__name__}: {exc}"
