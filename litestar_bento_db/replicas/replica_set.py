"""The replicas of one primary: their engines, their health, which one serves a read.

Each replica gets the primary's engine settings (same dialect tuning, its own
``LoopBoundPool``) and reads through an ``AUTOCOMMIT`` view of its engine: no
BEGIN/COMMIT round trips, and the replica's part of a session's commit never touches the
network. A replica is in rotation only after a check found it healthy; the watcher
(:class:`~litestar_bento_db.replicas.ReplicaWatcher`) records each check here, and so
does routing when a read on a replica fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from litestar_bento_db.config import ConfigError, DatabaseConfig
from litestar_bento_db.engines import DialectSettings, get_engine_for_config
from litestar_bento_db.resilience.classification import describe_error

__all__ = ["Replica", "ReplicaSet", "ReplicaState", "error_name"]

logger = logging.getLogger(__name__)


def error_name(error: BaseException) -> str:
    """What failed, for the replica's state: :func:`describe_error` (no message)."""
    return describe_error(error)


@dataclass(frozen=True)
class ReplicaState:
    """One replica's health as last recorded (replaced as a whole on each record)."""

    name: str
    """The replica's URL with the password masked."""
    reachable: bool | None = None
    """It answered the last check; None before the first one."""
    in_recovery: bool | None = None
    """``pg_is_in_recovery()``: it is a standby (None when unknown)."""
    lag: float | None = None
    """Seconds its data is behind the primary, at most (None when unknown)."""
    in_rotation: bool = False
    """It serves reads."""
    reason: str | None = None
    """Why it is out of rotation (None when in rotation)."""
    error: str | None = None
    """The class name of the last error (never its message: it may carry secrets)."""
    checked_at: float | None = None
    """``time.monotonic()`` of the last record; None before the first one."""

    @property
    def status(self) -> str:
        """``"pass"`` in rotation, ``"fail"`` unreachable, else ``"warn"``."""
        if self.in_rotation:
            return "pass"
        return "fail" if self.reachable is False else "warn"


class Replica:
    """One read replica: its engine settings, its engines once created, its state.

    Args:
        settings: The replica's dialect settings (its URL, the primary's tuning).
        name: The masked name used in logs and health details.
        check_settings: Settings of the watcher's own engine for this replica (one
            connection); default ``settings``.
    """

    def __init__(
        self, settings: DialectSettings, name: str, check_settings: DialectSettings | None = None
    ) -> None:
        self.settings = settings
        self.check_settings = check_settings or settings
        self.name = name
        self.engine: AsyncEngine | None = None
        """The replica's engine (owns its pool); None until :meth:`create_engine`."""
        self.read_engine: AsyncEngine | None = None
        """The ``AUTOCOMMIT`` view of :attr:`engine` (same pool) that reads go through."""
        self.sync_engine: Engine | None = None
        """``read_engine.sync_engine``: what a session's ``get_bind`` returns."""
        self.check_engine: AsyncEngine | None = None
        """The watcher's ``AUTOCOMMIT`` engine: checks never wait for a busy read pool."""
        self.state = ReplicaState(name)
        self._failed_at: float | None = None
        self._check_base: AsyncEngine | None = None

    @property
    def in_rotation(self) -> bool:
        """It serves reads."""
        return self.state.in_rotation

    def create_engine(self) -> AsyncEngine:
        """Create the engines once (no connection is opened); return the read engine."""
        if self.read_engine is None or self.check_engine is None:
            self.engine = self.settings.create_engine()
            self.read_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            self.sync_engine = self.read_engine.sync_engine
            self._check_base = self.check_settings.create_engine()
            self.check_engine = self._check_base.execution_options(isolation_level="AUTOCOMMIT")
        return self.read_engine

    async def dispose(self) -> None:
        """Close the replica's connections and forget its engines; it leaves rotation."""
        engines = [engine for engine in (self.engine, self._check_base) if engine is not None]
        self.engine = self.read_engine = self.sync_engine = None
        self.check_engine = self._check_base = None
        self.state = dataclasses.replace(self.state, in_rotation=False, reason="engine disposed")
        await asyncio.gather(*(engine.dispose() for engine in engines))

    def record(
        self,
        *,
        reachable: bool,
        max_lag: float,
        in_recovery: bool | None = None,
        lag: float | None = None,
        error: str | None = None,
        measured_since: float | None = None,
    ) -> ReplicaState:
        """Record a measurement, decide rotation, and log a change of rotation once.

        In rotation when reachable, in recovery, and its lag known and at most
        ``max_lag`` seconds.

        Args:
            reachable: It answered.
            max_lag: Seconds of lag allowed in rotation.
            in_recovery: ``pg_is_in_recovery()``.
            lag: Seconds behind the primary, if known.
            error: The error's class name when it did not answer.
            measured_since: ``time.monotonic()`` when the measurement began: a failure
                reported since then (:meth:`report_failure`) wins over a good result.

        Returns:
            The new state.
        """
        failed_at = self._failed_at
        if (
            reachable
            and measured_since is not None
            and failed_at is not None
            and failed_at >= measured_since
        ):
            return self.state  # older than a failure seen since
        if not reachable:
            reason = f"unreachable ({error})" if error else "unreachable"
        elif in_recovery is False:
            reason = "not a standby (not in recovery)"
        elif in_recovery is None or lag is None:
            reason = "lag unknown"
        elif lag > max_lag:
            reason = f"lag {lag:.2f} s > {max_lag:g} s"
        else:
            reason = None
        previous = self.state
        self.state = ReplicaState(
            name=self.name,
            reachable=reachable,
            in_recovery=in_recovery,
            lag=lag,
            in_rotation=reason is None,
            reason=reason,
            error=error,
            checked_at=time.monotonic(),
        )
        first = previous.checked_at is None
        if reason is not None and (previous.in_rotation or first):
            logger.warning("read replica %s out of rotation: %s", self.name, reason)
        elif reason is None and (not previous.in_rotation or first):
            logger.info("read replica %s in rotation (lag %.3f s)", self.name, lag or 0.0)
        return self.state

    def report_failure(self, error: BaseException, max_lag: float) -> None:
        """Take the replica out of rotation now: a statement on it could not connect."""
        self._failed_at = time.monotonic()
        if self.state.in_rotation:
            self.record(reachable=False, max_lag=max_lag, error=error_name(error))

    def __repr__(self) -> str:
        return f"Replica({self.name!r}, {self.state.status})"


def _check_config(config: DatabaseConfig) -> DatabaseConfig:
    """One connection for the watcher's checks of the database ``config`` names."""
    return dataclasses.replace(
        config, pool_size=1, max_overflow=0, pool_name=f"{config.metrics_pool_name}/check"
    )


class ReplicaSet:
    """The read replicas of a primary :class:`DatabaseConfig`.

    Replica engines are created by :meth:`create_engines` (from the event loop that
    serves; idempotent); until then and until a check put a replica in rotation,
    :meth:`pick` returns None and reads go to the primary.

    Args:
        config: The primary's configuration; its ``read_replica_urls`` must list at
            least one PostgreSQL replica.

    Raises:
        ConfigError: No replica URL, or the database is not PostgreSQL.
    """

    def __init__(self, config: DatabaseConfig) -> None:
        if not config.read_replica_urls:
            raise ConfigError("read_replica_urls: no replica configured")
        if not config.is_postgres:
            raise ConfigError("read_replica_urls: read replicas are supported on PostgreSQL")
        self.config = config
        self.max_lag = config.max_replica_lag
        """Seconds a replica may lag and stay in rotation."""
        self.check_interval = config.replica_check_interval
        """Seconds between two checks."""
        replicas = []
        for index, url in enumerate(config.read_replica_urls, start=1):
            # an explicit pool name gets a suffix; the default one, host:port/database,
            # is the replica's own
            pool_name = f"{config.pool_name}/replica{index}" if config.pool_name else None
            replica_config = dataclasses.replace(
                config,
                url=url,
                read_replica_urls=(),
                pool_name=pool_name,
                expect_writable=False,
            )
            check_config = _check_config(replica_config)
            replicas.append(
                Replica(
                    get_engine_for_config(replica_config),
                    replica_config.safe_url,
                    get_engine_for_config(check_config),
                )
            )
        self.replicas: tuple[Replica, ...] = tuple(replicas)
        """The replicas, in configuration order."""
        self._primary_check = get_engine_for_config(
            _check_config(dataclasses.replace(config, read_replica_urls=()))
        )
        self._primary_check_base: AsyncEngine | None = None
        self.primary_check_engine: AsyncEngine | None = None
        """The watcher's own connection to the primary (its WAL position), so that a busy
        primary pool never leaves the watcher without it."""
        self._next = 0

    def create_engines(self) -> None:
        """Create every replica's engine (no connection is opened); idempotent."""
        for replica in self.replicas:
            replica.create_engine()
        if self._primary_check_base is None:
            self._primary_check_base = self._primary_check.create_engine()
            self.primary_check_engine = self._primary_check_base.execution_options(
                isolation_level="AUTOCOMMIT"
            )

    def pick_replica(self) -> Replica | None:
        """The next replica in rotation (round robin), or None when none is."""
        replicas = self.replicas
        count = len(replicas)
        for offset in range(count):
            replica = replicas[(self._next + offset) % count]
            if replica.state.in_rotation and replica.sync_engine is not None:
                self._next = (self._next + offset + 1) % count
                return replica
        return None

    def pick(self) -> Engine | None:
        """The sync engine of the next replica in rotation, or None when none is."""
        replica = self.pick_replica()
        return replica.sync_engine if replica is not None else None

    @property
    def healthy(self) -> bool:
        """Every replica is in rotation."""
        return all(replica.state.in_rotation for replica in self.replicas)

    def report_failure(self, replica: Replica, error: BaseException) -> None:
        """Take a replica out of rotation now: a read on it failed to connect.

        The watcher puts it back once a check finds it healthy.
        """
        replica.report_failure(error, self.max_lag)

    def status(self) -> list[dict[str, Any]]:
        """Health details per replica: no password, no error message.

        Returns:
            One dict per replica: ``name``, ``status`` (``pass``, ``warn`` or ``fail``),
            ``in_rotation``, ``lag`` (seconds, or None), ``reason`` and ``error``.
        """
        return [
            {
                "name": state.name,
                "status": state.status,
                "in_rotation": state.in_rotation,
                "lag": None if state.lag is None else round(state.lag, 3),
                "reason": state.reason if state.checked_at is not None else "not checked yet",
                "error": state.error,
            }
            for state in (replica.state for replica in self.replicas)
        ]

    async def dispose(self) -> None:
        """Close every replica connection; the engines may be created again afterwards."""
        primary_check, self._primary_check_base = self._primary_check_base, None
        self.primary_check_engine = None
        disposals = [replica.dispose() for replica in self.replicas]
        if primary_check is not None:
            disposals.append(primary_check.dispose())
        await asyncio.gather(*disposals)

    def __repr__(self) -> str:
        return f"ReplicaSet({[replica.name for replica in self.replicas]!r})"
