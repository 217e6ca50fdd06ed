"""Database-client metrics: connection pool and statements, for OpenTelemetry and Prometheus.

:func:`instrument_engine` (called by every engine built here, unless
``DatabaseConfig.metrics`` is off) feeds an :class:`EngineMetrics` from pool events and
statement timings; :data:`REGISTRY` lists them, with the process-wide counters.
Exporters read the registry: :mod:`litestar_bento_db.metrics.otel` (``opentelemetry-api``)
and :mod:`litestar_bento_db.metrics.prometheus` (``prometheus-client``), both optional.
"""

from __future__ import annotations

from litestar_bento_db.metrics.core import (
    BUCKETS,
    COUNTERS,
    REGISTRY,
    Counters,
    EngineMetrics,
    Histogram,
    MetricsRegistry,
)
from litestar_bento_db.metrics.instrument import instrument_engine

__all__ = [
    "BUCKETS",
    "COUNTERS",
    "REGISTRY",
    "Counters",
    "EngineMetrics",
    "Histogram",
    "MetricsRegistry",
    "instrument_engine",
]
