"""The numbers behind the metrics: histograms, per-pool figures, process-wide counters.

Plain Python, no exporter: :mod:`.otel` and :mod:`.prometheus` read the same objects.
Everything here is exact: counts come from pool events and are updated under a lock
(an engine may be used from more than one thread).
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool

from litestar_bento_db._counters import COUNTERS, Counters

__all__ = [
    "BUCKETS",
    "DESCRIPTIONS",
    "COUNTERS",
    "REGISTRY",
    "Counters",
    "EngineMetrics",
    "Histogram",
    "MetricsRegistry",
]

#: seconds; the OpenTelemetry advice for ``db.client.operation.duration``, used for the
#: connection-pool histograms too
BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)

#: what each metric means, by its OpenTelemetry name (the Prometheus name replaces the
#: dots with underscores); the semantic conventions' wording where they have one
DESCRIPTIONS: Final = {
    "db.client.connection.count": "The number of connections that are currently in "
    "the state described by the state attribute.",
    "db.client.connection.max": "The maximum number of open connections allowed.",
    "db.client.connection.idle.max": "The maximum number of idle open connections allowed.",
    "db.client.connection.idle.min": "The minimum number of idle open connections allowed.",
    "db.client.connection.pending_requests": "The number of current pending requests for "
    "an open connection.",
    "db.client.connection.timeouts": "The number of connection timeouts that have occurred "
    "trying to obtain a connection from the pool.",
    "db.client.connection.create_time": "The time it took to create a new connection.",
    "db.client.connection.wait_time": "The time it took to obtain an open connection "
    "from the pool.",
    "db.client.connection.use_time": "The time between borrowing a connection and "
    "returning it to the pool.",
    "db.client.operation.duration": "Duration of database client operations.",
    "bento_db.retries": "Units of work run again, by error category.",
    "bento_db.retry_budget.refusals": "Retries refused by the shared retry budget.",
    "bento_db.commit.failures": "Failed COMMITs, by error category (ambiguous: the "
    "outcome is unknown).",
    "bento_db.connection.discards": "Pooled connections replaced, by reason.",
    "bento_db.primary.read_only_refusals": "Writes the primary refused as read-only "
    "(a standby or read-only server behind the primary's URL).",
    "bento_db.primary.moves": "Times the primary turned out read-only and its pool was "
    "replaced (a failover or switchover).",
}

Sink = Callable[[str, float, dict[str, str]], None]
"""Called with (metric name, value, attributes) for every histogram sample."""


class Histogram:
    """Explicit-bucket histogram: counts per bucket (``value <= bound``), sum and count."""

    __slots__ = ("_lock", "bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self._lock = threading.Lock()

    def record(self, value: float) -> None:
        """Add one sample."""
        index = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self.counts[index] += 1
            self.sum += value

    @property
    def count(self) -> int:
        """Samples recorded."""
        return sum(self.counts)

    def snapshot(self) -> tuple[list[int], float]:
        """Bucket counts and sum, consistent with each other."""
        with self._lock:
            return list(self.counts), self.sum


@dataclass
class EngineMetrics:
    """The figures of one engine: its pool and its statements.

    Counts are maintained by pool events; the limits and waiters are read from the
    engine's current pool when asked (``dispose()`` replaces the pool object).
    """

    pool_name: str
    """``db.client.connection.pool.name``."""
    dialect_name: str
    """SQLAlchemy's dialect name (``system`` refines it once connected)."""
    namespace: str
    """``db.namespace``: the database name."""
    engine: weakref.ref[Engine] = field(repr=False)
    open: int = 0
    """Connections open (idle or used)."""
    used: int = 0
    """Connections checked out."""
    timeouts: int = 0
    """Checkouts that waited ``pool_timeout`` in vain."""
    create_time: Histogram = field(default_factory=Histogram)
    wait_time: Histogram = field(default_factory=Histogram)
    use_time: Histogram = field(default_factory=Histogram)
    operations: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    """``db.client.operation.duration`` by (operation name, error type); "" when unknown."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    sinks: list[Sink] = field(default_factory=list, repr=False)
    _attributes: dict[tuple[str, str, str], dict[str, str]] = field(
        default_factory=dict, repr=False
    )
    _system: str | None = field(default=None, repr=False)

    @property
    def system(self) -> str:
        """``db.system.name``: postgresql, mysql, mariadb or sqlite."""
        if self._system is not None:
            return self._system
        if self.dialect_name not in ("mysql", "mariadb"):
            self._system = self.dialect_name
            return self._system
        engine = self.engine()
        if engine is None or engine.dialect.server_version_info is None:
            return "mysql"  # not connected yet: MariaDB is told apart once connected
        self._system = "mariadb" if getattr(engine.dialect, "is_mariadb", False) else "mysql"
        return self._system

    @property
    def pool_attributes(self) -> dict[str, str]:
        """The OpenTelemetry attributes of this pool's metrics."""
        return {"db.client.connection.pool.name": self.pool_name}

    def waited(self, seconds: float) -> None:
        """A checkout got its connection after ``seconds`` (the pool's observer)."""
        self.record("db.client.connection.wait_time", self.wait_time, seconds)

    @property
    def pool(self) -> Pool | None:
        """The engine's current pool (None once the engine is gone)."""
        engine = self.engine()
        return engine.pool if engine is not None else None

    def add(self, open_: int = 0, used: int = 0) -> None:
        """Change the open and used counts."""
        with self.lock:
            self.open += open_
            self.used += used

    def timed_out(self) -> None:
        """A checkout gave up after ``pool_timeout``."""
        with self.lock:
            self.timeouts += 1

    def _emit(self, name: str, value: float, attributes: dict[str, str]) -> None:
        for sink in self.sinks:
            sink(name, value, attributes)

    def record(self, name: str, histogram: Histogram, value: float) -> None:
        """Record a pool histogram sample (``create_time``, ``wait_time``, ``use_time``)."""
        histogram.record(value)
        if self.sinks:
            self._emit(name, value, self.pool_attributes)

    def operation(self, operation: str, error: str, seconds: float) -> None:
        """Record one database operation's duration."""
        key = (operation, error)
        histogram = self.operations.get(key)
        if histogram is None:
            with self.lock:
                histogram = self.operations.setdefault(key, Histogram())
        histogram.record(seconds)
        if self.sinks:
            self._emit("db.client.operation.duration", seconds, self.operation_attributes(key))

    def operation_attributes(self, key: tuple[str, str]) -> dict[str, str]:
        """The OpenTelemetry attributes of an operation histogram (built once per key)."""
        system = self.system  # known once connected: mariadb or mysql
        attributes = self._attributes.get((system, *key))
        if attributes is None:
            attributes = {"db.system.name": system, "db.namespace": self.namespace}
            if key[0]:
                attributes["db.operation.name"] = key[0]
            if key[1]:
                attributes["error.type"] = key[1]
            self._attributes[(system, *key)] = attributes
        return attributes


class MetricsRegistry:
    """The engines being measured, each until it is collected, and the process counters."""

    def __init__(self) -> None:
        self._strong: dict[int, EngineMetrics] = {}
        self._lock = threading.Lock()
        self.counters = COUNTERS
        self.sinks: list[Sink] = []
        """Receive every histogram sample of every engine (the OpenTelemetry exporter)."""

    def add(self, metrics: EngineMetrics, engine: Engine) -> None:
        """Measure ``engine`` until it is garbage-collected."""
        key = id(metrics)
        with self._lock:
            self._strong[key] = metrics
            metrics.sinks = self.sinks  # shared: an exporter added later sees every engine
        weakref.finalize(engine, self._forget, key)

    def _forget(self, key: int) -> None:
        with self._lock:
            self._strong.pop(key, None)

    def engines(self) -> Iterator[EngineMetrics]:
        """The engines measured now."""
        with self._lock:
            current = list(self._strong.values())
        return iter(current)

    def for_engine(self, engine: AsyncEngine | Engine) -> EngineMetrics | None:
        """The metrics of ``engine`` (async or sync), if it is measured."""
        sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
        return next((m for m in self.engines() if m.engine() is sync_engine), None)

    def by_pool_name(self) -> dict[str, list[EngineMetrics]]:
        """Engines grouped by pool name (two engines may share one: their figures add up)."""
        groups: dict[str, list[EngineMetrics]] = {}
        for metrics in self.engines():
            groups.setdefault(metrics.pool_name, []).append(metrics)
        return groups


REGISTRY: Final = MetricsRegistry()


def pool_limits(pool: Pool | None) -> dict[str, Any]:
    """``max``, ``idle_max``, ``idle_min`` and ``pending`` read from a pool now."""
    from litestar_bento_db.pool import LoopBoundPool

    if isinstance(pool, LoopBoundPool):
        size = pool.size()
        overflow = pool.max_overflow
        return {
            "max": size + overflow if overflow >= 0 else None,
            "idle_max": size + max(overflow, 0),
            "idle_min": 0,
            "pending": pool.pending(),
        }
    return {"max": None, "idle_max": None, "idle_min": 0, "pending": 0}


def group_limits(group: Iterable[EngineMetrics]) -> dict[str, int | None]:
    """:func:`pool_limits` added up over engines sharing a pool name.

    A limit one of the pools lacks (``None``) is ``None`` for the group.
    """
    limits = [pool_limits(metrics.pool) for metrics in group]
    added: dict[str, int | None] = {}
    for key in ("max", "idle_max", "idle_min", "pending"):
        values = [limit[key] for limit in limits]
        added[key] = None if None in values else sum(values)
    return added
