"""Prometheus export, when ``prometheus-client`` is installed (extra ``prometheus``).

The same numbers as the OpenTelemetry export, named as the OpenTelemetry-to-Prometheus
conversion names them (dots become underscores, ``s`` becomes ``_seconds``, counters end
in ``_total``). A collector reads the registry at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from litestar_bento_db.metrics.core import (
    DESCRIPTIONS,
    REGISTRY,
    EngineMetrics,
    Histogram,
    MetricsRegistry,
    group_limits,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["DatabaseCollector", "register_collector"]

_POOL: Final = "db_client_connection_pool_name"
#: Prometheus label -> OpenTelemetry attribute of db_client_operation_duration
_OPERATION_LABELS: Final = {
    "db_system_name": "db.system.name",
    "db_namespace": "db.namespace",
    "db_operation_name": "db.operation.name",
    "error_type": "error.type",
}


def _named(name: str) -> tuple[str, str]:
    """The Prometheus name (dots become underscores) and the description of a metric."""
    return name.replace(".", "_"), DESCRIPTIONS[name]


def _buckets(histogram: Histogram) -> tuple[list[tuple[str, float]], float]:
    counts, total = histogram.snapshot()
    cumulative, buckets = 0.0, []
    for bound, count in zip((*histogram.bounds, float("inf")), counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
    return buckets, total


def _merged(histograms: list[Histogram]) -> Histogram:
    merged = Histogram(histograms[0].bounds)
    for histogram in histograms:
        counts, total = histogram.snapshot()
        merged.counts = [a + b for a, b in zip(merged.counts, counts, strict=True)]
        merged.sum += total
    return merged


class DatabaseCollector(Collector):
    """Collects the database-client metrics of ``registry`` for ``prometheus_client``."""

    def __init__(self, registry: MetricsRegistry = REGISTRY) -> None:
        self.registry = registry

    def describe(self) -> Iterator[Metric]:
        """The families (without samples), so a second registration is refused."""
        return self._families({})

    def collect(self) -> Iterator[Metric]:
        """The families with their samples, read now."""
        return self._families(self.registry.by_pool_name())

    def _families(self, groups: dict[str, list[EngineMetrics]]) -> Iterator[Metric]:
        count = GaugeMetricFamily(
            *_named("db.client.connection.count"), labels=[_POOL, "db_client_connection_state"]
        )
        gauges = {
            key: GaugeMetricFamily(*_named(f"db.client.connection.{name}"), labels=[_POOL])
            for key, name in (
                ("max", "max"),
                ("idle_max", "idle.max"),
                ("idle_min", "idle.min"),
                ("pending", "pending_requests"),
            )
        }
        timeouts = CounterMetricFamily(*_named("db.client.connection.timeouts"), labels=[_POOL])
        pool_histograms = {
            name: HistogramMetricFamily(
                *_named(f"db.client.connection.{name}"), labels=[_POOL], unit="seconds"
            )
            for name in ("create_time", "wait_time", "use_time")
        }
        operations = HistogramMetricFamily(
            *_named("db.client.operation.duration"),
            labels=list(_OPERATION_LABELS),
            unit="seconds",
        )
        for name, group in groups.items():
            used = sum(m.used for m in group)
            count.add_metric([name, "idle"], sum(m.open for m in group) - used)
            count.add_metric([name, "used"], used)
            limits = group_limits(group)
            for key, family in gauges.items():
                value = limits[key]
                if value is not None:
                    family.add_metric([name], value)
            timeouts.add_metric([name], sum(m.timeouts for m in group))
            for attribute, histogram_family in pool_histograms.items():
                buckets, total = _buckets(_merged([getattr(m, attribute) for m in group]))
                histogram_family.add_metric([name], buckets, total)
            for metrics in group:
                for operation, histogram in list(metrics.operations.items()):
                    attributes = metrics.operation_attributes(operation)
                    labels = [attributes.get(key, "") for key in _OPERATION_LABELS.values()]
                    buckets, total = _buckets(histogram)
                    operations.add_metric(labels, buckets, total)
        yield count
        yield from gauges.values()
        yield timeouts
        yield from pool_histograms.values()
        yield operations
        yield from self._counters()

    def _counters(self) -> Iterator[Metric]:
        counters = self.registry.counters
        tables: list[tuple[str, str, dict[str, int]]] = [
            ("bento_db.retries", "error_category", counters.retries),
            ("bento_db.commit.failures", "error_category", counters.commit_failures),
            ("bento_db.connection.discards", "reason", counters.discards),
            ("bento_db.primary.read_only_refusals", _POOL, counters.read_only_refusals),
            ("bento_db.primary.moves", _POOL, counters.primary_moves),
        ]
        for name, label, table in tables:
            family = CounterMetricFamily(*_named(name), labels=[label])
            for key, value in dict(table).items():
                family.add_metric([key], value)
            yield family
        refusals = CounterMetricFamily(*_named("bento_db.retry_budget.refusals"))
        refusals.add_metric([], counters.budget_refusals)
        yield refusals


_registered: dict[int, DatabaseCollector] = {}


def register_collector(
    target: CollectorRegistry | None = None, registry: MetricsRegistry = REGISTRY
) -> DatabaseCollector:
    """Register the collector in ``target`` (``prometheus_client.REGISTRY``) once."""
    from prometheus_client import REGISTRY as DEFAULT

    prometheus: Any = target if target is not None else DEFAULT
    key = id(prometheus)
    if key not in _registered:
        collector = DatabaseCollector(registry)
        prometheus.register(collector)
        _registered[key] = collector
    return _registered[key]
