"""The replica watcher: measures each replica's reachability and lag, round after round.

One round reads the primary's current WAL position, then asks every replica at once (each
within ``timeout``, on a connection of the watcher's own, so a busy read pool never
delays a check) whether it is in recovery, which WAL position it has replayed, and
how old its last replayed commit is. The lag recorded is the smallest of these upper
bounds on how far its data is behind:

- 0 when it has replayed the primary's current WAL position (so an idle primary never
  makes a replica look behind), read on the watcher's own connection to the primary
  (not having it this round, nothing proves the replica current). The position is
  ``pg_current_wal_flush_lsn()``: WAL is streamed once flushed, and WAL written but not
  yet flushed (background writes, asynchronous commits) would make a replica look behind
  for up to the WAL writer's delay;
- ``now - t`` for the newest earlier round, at time ``t``, whose primary position the
  replica has replayed;
- ``now() - pg_last_xact_replay_timestamp()`` on the replica (compares two servers'
  clocks).

None of them known: the lag is unknown and the replica stays out of rotation.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from litestar_bento_db.replicas.replica_set import Replica, ReplicaSet, error_name

__all__ = ["ReplicaWatcher", "parse_lsn"]

logger = logging.getLogger(__name__)

_PRIMARY_QUERY = text("SELECT pg_current_wal_flush_lsn()::text")
_REPLICA_QUERY = text(
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
    " EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8"
)
#: earlier rounds' primary positions kept for the lag bound, at most
_MAX_SAMPLES = 256


def parse_lsn(lsn: str | None) -> int | None:
    """A PostgreSQL WAL position (``pg_lsn`` text such as ``"16/B374D848"``) as an int."""
    if not lsn:
        return None
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class ReplicaWatcher:
    """Checks every replica of a :class:`ReplicaSet` and records the result there.

    Args:
        replicas: The replicas to watch.
        timeout: Seconds allowed for the primary's query and for each replica's
            connection and query; default ``min(2, 2 * replica_check_interval)``.
    """

    def __init__(self, replicas: ReplicaSet, *, timeout: float | None = None) -> None:
        self.replicas = replicas
        self.timeout = timeout if timeout is not None else min(2.0, 2 * replicas.check_interval)
        self.last_round: float | None = None
        """Seconds the last :meth:`check` took (None before the first)."""
        self.rounds = 0
        """Checks completed."""
        # (time.monotonic(), primary WAL position), newest first
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._keep = max(2 * replicas.max_lag, 4 * replicas.check_interval)
        self._last_error: str | None = None

    async def check(self, primary: AsyncEngine) -> None:
        """Measure every replica once (concurrently) and record it; never raises.

        Creates the replica engines first if needed (call it from the serving loop).

        Args:
            primary: The primary's engine; its current WAL position is read first.
        """
        self.replicas.create_engines()
        started = time.perf_counter()
        current = await self._primary_position(primary)
        await asyncio.gather(*(self._check(replica, current) for replica in self.replicas.replicas))
        self.last_round = time.perf_counter() - started
        self.rounds += 1

    async def run(self, primary: AsyncEngine, stop: asyncio.Event) -> None:
        """Check every ``replica_check_interval`` seconds until ``stop`` is set; never raises.

        Args:
            primary: The primary's engine.
            stop: Set it to end the loop (the round under way finishes first).
        """
        interval = self.replicas.check_interval
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.check(primary)
                self._last_error = None
            except Exception as error:  # a bug, not a database condition: report it once
                if type(error).__name__ != self._last_error:
                    logger.exception("read replica check failed")
                self._last_error = type(error).__name__
            remaining = interval - (time.monotonic() - started)
            if remaining > 0:
                try:
                    async with asyncio.timeout(remaining):
                        await stop.wait()
                except TimeoutError:
                    pass

    async def _primary_position(self, primary: AsyncEngine) -> int | None:
        taken_at = time.monotonic()
        try:
            engine = self.replicas.primary_check_engine or primary
            async with asyncio.timeout(self.timeout), engine.connect() as connection:
                position = parse_lsn(await connection.scalar(_PRIMARY_QUERY))
        except Exception as error:
            logger.debug("primary WAL position unavailable: %s", error_name(error))
            return None
        if position is not None:
            samples = self._samples
            samples.appendleft((taken_at, position))
            while samples and (
                len(samples) > _MAX_SAMPLES or taken_at - samples[-1][0] > self._keep
            ):
                samples.pop()
        return position

    async def _check(self, replica: Replica, current: int | None) -> None:
        max_lag = self.replicas.max_lag
        replica.create_engine()
        engine = replica.check_engine
        assert engine is not None
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout), engine.connect() as connection:
                row = (await connection.execute(_REPLICA_QUERY)).one()
        except Exception as error:
            replica.record(reachable=False, max_lag=max_lag, error=error_name(error))
            return
        in_recovery, replayed, xact_lag = row
        lag = None
        if in_recovery:
            # without the primary's position this round, nothing proves the replica is
            # current: earlier rounds' positions and the replay timestamp bound its lag
            lag = self._lag(parse_lsn(replayed), current, xact_lag)
        replica.record(
            reachable=True,
            in_recovery=bool(in_recovery),
            lag=lag,
            max_lag=max_lag,
            measured_since=started,
        )

    def _lag(
        self, replayed: int | None, reference: int | None, xact_lag: float | None
    ) -> float | None:
        bounds = [] if xact_lag is None else [max(0.0, xact_lag)]
        if replayed is not None:
            if reference is not None and replayed >= reference:
                return 0.0
            now = time.monotonic()
            for taken_at, position in self._samples:
                if replayed >= position:
                    bounds.append(max(0.0, now - taken_at))
                    break
        return min(bounds) if bounds else None
