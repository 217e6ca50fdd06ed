"""Feed an engine's metrics from SQLAlchemy's pool events and its dialect's calls.

Pool events (``connect``, ``checkout``, ``checkin``, ``close``, ``detach``,
``invalidate``) keep the open and used counts exact across ``dispose()``, drains,
invalidation and other-loop discards; ``do_connect`` starts the clock for
``create_time``. Statement and COMMIT durations come from layers around the dialect's
``do_execute`` family and ``do_commit``, which
:func:`litestar_bento_db.instrumentation.install` puts in place (engine-level execution
events would make every statement dispatch its, otherwise empty, events).
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from litestar_bento_db.config import DatabaseConfig
from litestar_bento_db.metrics.core import REGISTRY, EngineMetrics, MetricsRegistry
from litestar_bento_db.metrics.leaks import watch_leaks
from litestar_bento_db.pool import LoopBoundPool
from litestar_bento_db.resilience.classification import DatabaseErrorClassifier

__all__ = ["Layer", "commit_timer", "instrument_engine", "statement_timer"]

#: wraps one dialect call (``do_execute``, ``do_commit``, ...) in another of the same shape
Layer = Callable[[Callable[..., Any]], Callable[..., Any]]

logger = logging.getLogger("litestar_bento_db.statements")

_STARTED = "bento.connect_started"
_OUT = "bento.checked_out_at"


def _operation(context: Any) -> str:
    """The operation name where SQLAlchemy knows it without parsing SQL."""
    if context is None:
        return ""
    if context.isinsert:
        return "INSERT"
    if context.isupdate:
        return "UPDATE"
    if context.isdelete:
        return "DELETE"
    compiled = getattr(context, "compiled", None)
    statement = getattr(compiled, "statement", None)
    return "SELECT" if getattr(statement, "is_select", False) else ""


def _error_type(error: BaseException) -> str:
    code = DatabaseErrorClassifier.error_code(error)
    return str(code) if code is not None else type(error).__name__


def _watch_pool(engine: Engine, metrics: EngineMetrics) -> None:
    target = engine

    def do_connect(_dialect: Any, record: ConnectionPoolEntry, *_args: Any) -> None:
        record.info[_STARTED] = time.perf_counter()

    def connect(_dbapi: Any, record: ConnectionPoolEntry) -> None:
        metrics.add(open_=1)
        started = record.info.pop(_STARTED, None)
        if started is not None:
            metrics.record(
                "db.client.connection.create_time",
                metrics.create_time,
                time.perf_counter() - started,
            )

    def checkout(_dbapi: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        record.info[_OUT] = time.perf_counter()
        metrics.add(used=1)

    def checkin(_dbapi: Any, record: ConnectionPoolEntry) -> None:
        taken = record.info.pop(_OUT, None)
        if taken is not None:
            metrics.add(used=-1)
            metrics.record(
                "db.client.connection.use_time", metrics.use_time, time.perf_counter() - taken
            )

    def close(_dbapi: Any, _record: ConnectionPoolEntry) -> None:
        metrics.add(open_=-1)

    def detach(_dbapi: Any, record: ConnectionPoolEntry) -> None:
        # no checkin and no close event follows for this pool
        used = -1 if record.info.pop(_OUT, None) is not None else 0
        metrics.add(open_=-1, used=used)

    event.listen(target, "do_connect", do_connect)
    for name, listener in (
        ("connect", connect),
        ("checkout", checkout),
        ("checkin", checkin),
        ("close", close),
        ("detach", detach),
    ):
        event.listen(target, name, listener)


def _timed(
    call: Callable[..., Any], metrics: EngineMetrics | None, slow: float
) -> Callable[..., Any]:
    @functools.wraps(call)
    def timed(cursor: Any, statement: str, *args: Any) -> Any:
        context = args[-1] if args else None
        started = time.perf_counter()
        error = ""
        try:
            return call(cursor, statement, *args)
        except BaseException as exc:
            error = _error_type(exc)
            raise
        finally:
            seconds = time.perf_counter() - started
            if metrics is not None:
                metrics.operation(_operation(context), error, seconds)
            if slow and seconds >= slow:
                logger.warning("slow statement (%.3f s): %s", seconds, statement)

    return timed


def statement_timer(metrics: EngineMetrics | None, slow: float) -> Layer | None:
    """The layer timing statements into ``metrics``, logging those over ``slow`` seconds.

    None when neither is asked for.
    """
    if metrics is None and not slow:
        return None
    return lambda call: _timed(call, metrics, slow)


def commit_timer(metrics: EngineMetrics | None) -> Layer | None:
    """The layer timing COMMITs into ``metrics`` (slow-statement logging skips them)."""
    if metrics is None:
        return None

    def layer(do_commit: Callable[..., Any]) -> Callable[..., Any]:
        def timed_commit(dbapi_connection: Any) -> None:
            started = time.perf_counter()
            error = ""
            try:
                do_commit(dbapi_connection)
            except BaseException as exc:
                error = _error_type(exc)
                raise
            finally:
                metrics.operation("COMMIT", error, time.perf_counter() - started)

        return timed_commit

    return layer


def instrument_engine(
    engine: Engine, config: DatabaseConfig, registry: MetricsRegistry = REGISTRY
) -> EngineMetrics | None:
    """Measure ``engine``'s pool as ``config`` asks, and watch for leaks.

    Pool figures (``metrics``) and connections held too long
    (``leak_detection_threshold``); statement timing is the layers above.

    Returns:
        The engine's metrics (also listed in ``registry``), or None with metrics off.
    """
    if config.leak_detection_threshold > 0:
        watch_leaks(engine, config.leak_detection_threshold)
    if not config.metrics:
        return None
    metrics = _detached_metrics(engine, config)
    _watch_pool(engine, metrics)
    if isinstance(engine.pool, LoopBoundPool):
        engine.pool.observer = metrics
    registry.add(metrics, engine)
    return metrics


def _detached_metrics(engine: Engine, config: DatabaseConfig) -> EngineMetrics:
    return EngineMetrics(
        pool_name=config.metrics_pool_name,
        dialect_name=engine.dialect.name,
        namespace=config.sqlalchemy_url.database or "",
        engine=weakref.ref(engine),
    )
