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
import logging
import signal
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from litestar_bento_db.draining import DrainStats, drain_connections
from litestar_bento_db.engines import get_engine_for_config
from litestar_bento_db.lifecycle import ping, pool_status
from litestar_bento_db.options import PluginConfig
from litestar_bento_db.signals import ChainedSignalHandler

__all__ = ["DatabaseRuntime", "DatabaseStartupError", "Phase", "Probe"]

logger = logging.getLogger(__name__)


class DatabaseStartupError(RuntimeError):
    """The database could not be reached at startup (``fail_fast=True``)."""


class Phase(StrEnum):
    """Where the runtime is in its life."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Probe:
    """The result of one readiness ping."""

    ok: bool
    latency_ms: float | None
    checked_at: float
    error: str | None = None


class DatabaseRuntime:
    """Engine and readiness for one worker process."""

    def __init__(self, config: PluginConfig) -> None:
        self.config = config
        self.dialect = get_engine_for_config(config.database)
        self.engine: AsyncEngine | None = None
        self.phase = Phase.STARTING
        self.last_error: str | None = None
        self.drain_stats: DrainStats | None = None
        self.ready_at: float | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._probe: Probe | None = None
        self._probe_task: asyncio.Future[Probe] | None = None
        self.pings = 0
        """Readiness pings sent to the database (for tests and metrics)."""
        self._signals = ChainedSignalHandler(
            (signal.SIGTERM, signal.SIGINT), self._on_shutdown_signal, reraise_default=True
        )

    # -- startup ------------------------------------------------------------------

    def create_engine(self) -> AsyncEngine:
        """Create the engine (once); called from the serving loop at startup."""
        if self.engine is None:
            self.engine = self.dialect.create_engine()
        return self.engine

    async def _warm_up(self) -> None:
        engine = self.create_engine()
        count = max(1, min(self.config.database.warmup_connections, self._pool_capacity()))

        async def open_and_ping() -> Any:
            connection = await engine.connect()
            try:
                await connection.execute(text("SELECT 1"))
            except BaseException:
                await connection.close()
                raise
            return connection

        results = await asyncio.gather(
            *(open_and_ping() for _ in range(count)), return_exceptions=True
        )
        for result in results:
            if not isinstance(result, BaseException):
                await result.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if self.config.metadata is not None:
            async with engine.begin() as connection:
                await connection.run_sync(self.config.metadata.create_all)

    def _pool_capacity(self) -> int:
        database = self.config.database
        if not self.dialect.supports_pool or database.max_overflow < 0:
            return database.warmup_connections
        return max(1, database.pool_size + database.max_overflow)

    def _mark_ready(self) -> None:
        self.phase = Phase.READY
        self.ready_at = time.monotonic()
        self.last_error = None
        logger.info("database ready: %s", self.config.database.safe_url)

    @staticmethod
    def _describe(exc: BaseException) -> str:
        # class name only: driver messages can carry the user, host or SQL
        return type(exc).__name__

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
        self._watch_shutdown_signals()
        try:
            await self._warm_up()
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

    async def _keep_connecting(self) -> None:
        delay = 0.1
        while self.phase is Phase.STARTING:
            await asyncio.sleep(delay)
            try:
                await self._warm_up()
            except Exception as exc:  # reported through readiness
                self.last_error = self._describe(exc)
                delay = min(delay * 2, self.config.startup_retry_max_delay)
            else:
                if self.phase is Phase.STARTING:
                    self._mark_ready()

    # -- readiness ----------------------------------------------------------------

    async def _ping(self) -> Probe:
        engine = self.create_engine()
        self.pings += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.health.readiness_timeout):
                await ping(engine)
        except Exception as exc:  # a probe reports, it does not raise
            return Probe(False, None, time.monotonic(), self._describe(exc))
        latency = round((time.perf_counter() - started) * 1000, 2)
        return Probe(True, latency, time.monotonic(), None)

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
        """The pool's figures (zeros before the engine exists)."""
        if self.engine is None:
            return {}
        return pool_status(self.engine.pool)

    # -- shutdown -----------------------------------------------------------------

    async def stop(self) -> DrainStats | None:
        """Mark not ready, stop connecting, drain the pool (the engine is disposed after)."""
        self.phase = Phase.DRAINING
        self._restore_signal_handlers()
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
        if self._probe_task is not None and not self._probe_task.done():
            self._probe_task.cancel()
        if self.engine is not None:
            self.drain_stats = await drain_connections(
                self.engine, timeout=self.config.drain_timeout, mode=self.config.drain_mode
            )
        self.phase = Phase.STOPPED
        return self.drain_stats
