"""OpenTelemetry export, when ``opentelemetry-api`` is installed (extra ``otel``).

Names, units and attributes follow the semantic conventions for database clients. The
pool's counts, limits, waiters and timeouts are observable instruments read from the
registry at collection time (exact whenever the app installed its SDK); the durations
are histograms fed sample by sample. The app's own ``MeterProvider`` decides where they
go; without an SDK everything is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from litestar_bento_db.metrics.core import (
    BUCKETS,
    DESCRIPTIONS,
    REGISTRY,
    MetricsRegistry,
    group_limits,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = ["OpenTelemetryMetrics", "install_opentelemetry"]

SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.33.0"
_POOL: Final = "db.client.connection.pool.name"
_HISTOGRAMS: Final = (
    "db.client.connection.create_time",
    "db.client.connection.wait_time",
    "db.client.connection.use_time",
    "db.client.operation.duration",
)


class OpenTelemetryMetrics:
    """The database-client instruments on one meter, reading ``registry``.

    Args:
        registry: What to export.
        meter_provider: The provider to use; the global one when omitted.
    """

    def __init__(
        self, registry: MetricsRegistry = REGISTRY, meter_provider: MeterProvider | None = None
    ) -> None:
        from opentelemetry import metrics

        from litestar_bento_db import __version__

        self.registry = registry
        meter = metrics.get_meter(
            "litestar_bento_db", __version__, meter_provider=meter_provider, schema_url=SCHEMA_URL
        )
        observe: list[tuple[str, str, Any]] = [
            ("db.client.connection.count", "{connection}", self._count),
            ("db.client.connection.max", "{connection}", self._limit("max")),
            ("db.client.connection.idle.max", "{connection}", self._limit("idle_max")),
            ("db.client.connection.idle.min", "{connection}", self._limit("idle_min")),
            ("db.client.connection.pending_requests", "{request}", self._limit("pending")),
        ]
        for name, unit, callback in observe:
            meter.create_observable_up_down_counter(
                name, callbacks=[callback], unit=unit, description=DESCRIPTIONS[name]
            )
        for name, unit, callback in (
            ("db.client.connection.timeouts", "{timeout}", self._timeouts),
            ("bento_db.retries", "{retry}", self._retries),
            ("bento_db.retry_budget.refusals", "{retry}", self._refusals),
            ("bento_db.commit.failures", "{commit}", self._commit_failures),
            ("bento_db.connection.discards", "{connection}", self._discards),
            ("bento_db.primary.read_only_refusals", "{statement}", self._read_only_refusals),
            ("bento_db.primary.moves", "{event}", self._primary_moves),
        ):
            meter.create_observable_counter(
                name, callbacks=[callback], unit=unit, description=DESCRIPTIONS[name]
            )
        self._histograms = {
            name: meter.create_histogram(
                name,
                unit="s",
                description=DESCRIPTIONS[name],
                explicit_bucket_boundaries_advisory=list(BUCKETS),
            )
            for name in _HISTOGRAMS
        }
        if meter_provider is not None:
            self._feed_histograms()
        # else: the global provider may still be the API's no-op proxy; histogram samples
        # are fed from the first collection on (a reader exists: an SDK is installed)

    def _feed_histograms(self) -> None:
        if self._record not in self.registry.sinks:
            self.registry.sinks.append(self._record)

    def close(self) -> None:
        """Stop feeding the histograms (the observable instruments stay on their meter)."""
        if self._record in self.registry.sinks:
            self.registry.sinks.remove(self._record)

    def _record(self, name: str, value: float, attributes: dict[str, str]) -> None:
        self._histograms[name].record(value, attributes)

    def _count(self, _options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        self._feed_histograms()  # a reader collects: an SDK is installed
        for name, group in self.registry.by_pool_name().items():
            used = sum(m.used for m in group)
            idle = sum(m.open - m.used for m in group)
            yield Observation(idle, {_POOL: name, "db.client.connection.state": "idle"})
            yield Observation(used, {_POOL: name, "db.client.connection.state": "used"})

    def _limit(self, key: str) -> Any:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            from opentelemetry.metrics import Observation

            for name, group in self.registry.by_pool_name().items():
                value = group_limits(group)[key]
                if value is not None:
                    yield Observation(value, {_POOL: name})

        return observe

    def _timeouts(self, _options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        for name, group in self.registry.by_pool_name().items():
            yield Observation(sum(m.timeouts for m in group), {_POOL: name})

    def _by(self, table: dict[str, int], attribute: str) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        for key, value in dict(table).items():
            yield Observation(value, {attribute: key})

    def _retries(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._by(self.registry.counters.retries, "error.category")

    def _refusals(self, _options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        yield Observation(self.registry.counters.budget_refusals)

    def _commit_failures(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._by(self.registry.counters.commit_failures, "error.category")

    def _discards(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._by(self.registry.counters.discards, "reason")

    def _read_only_refusals(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._by(self.registry.counters.read_only_refusals, _POOL)

    def _primary_moves(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._by(self.registry.counters.primary_moves, _POOL)


_installed: dict[int, OpenTelemetryMetrics] = {}


def install_opentelemetry(
    registry: MetricsRegistry = REGISTRY, meter_provider: MeterProvider | None = None
) -> OpenTelemetryMetrics | None:
    """Export ``registry`` through OpenTelemetry once per meter provider.

    Returns:
        The exporter, or None when ``opentelemetry-api`` is not installed.
    """
    try:
        import opentelemetry.metrics  # noqa: F401
    except ImportError:
        return None
    key = id(meter_provider)
    if key not in _installed:
        _installed[key] = OpenTelemetryMetrics(registry, meter_provider)
    return _installed[key]
