"""Database-client metrics against real servers, read through the real exporters.

OpenTelemetry's SDK (``InMemoryMetricReader``) and a parse of the Prometheus text give
the same numbers; the names are the contract. Counts are checked against the pool and
against the server's own list of connections, across load, waits, timeouts, drains and
other-loop discards. Leak detection and slow statements log what they must, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.plugins.prometheus import PrometheusController
from litestar.testing import TestClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from litestar_bento_db import (
    DatabaseConfig,
    DatabasePlugin,
    DbSession,
    HealthConfig,
    create_async_engine_from_config,
    drain_connections,
)
from litestar_bento_db.metrics import REGISTRY
from litestar_bento_db.metrics.otel import OpenTelemetryMetrics
from litestar_bento_db.metrics.prometheus import DatabaseCollector
from tests.conftest import SECRET, create_password_user, require_server

OTEL_NAMES = {
    "db.client.connection.count",
    "db.client.connection.max",
    "db.client.connection.idle.max",
    "db.client.connection.idle.min",
    "db.client.connection.pending_requests",
    "db.client.connection.timeouts",
    "db.client.connection.create_time",
    "db.client.connection.wait_time",
    "db.client.connection.use_time",
    "db.client.operation.duration",
}
PROMETHEUS_SAMPLES = {
    "db_client_connection_count",
    "db_client_connection_max",
    "db_client_connection_idle_max",
    "db_client_connection_idle_min",
    "db_client_connection_pending_requests",
    "db_client_connection_timeouts_total",
    "db_client_connection_create_time_seconds_bucket",
    "db_client_connection_wait_time_seconds_bucket",
    "db_client_connection_use_time_seconds_bucket",
    "db_client_operation_duration_seconds_bucket",
}


class Readers:
    """Both exports of the process registry, for one pool name."""

    def __init__(self, pool_name: str) -> None:
        self.pool_name = pool_name
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        self.exporter = OpenTelemetryMetrics(REGISTRY, meter_provider=self.provider)
        self.prometheus = CollectorRegistry()
        self.prometheus.register(DatabaseCollector(REGISTRY))

    def otel_points(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        points: dict[str, list[Any]] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points

    def otel(self, name: str, **attributes: str) -> float:
        """The value (or histogram count) of ``name`` for this pool and ``attributes``."""
        wanted = {"db.client.connection.pool.name": self.pool_name, **attributes}
        for point in self.otel_points().get(name, []):
            if all(point.attributes.get(k) == v for k, v in wanted.items()):
                value = getattr(point, "value", None)
                return float(value if value is not None else point.count)
        return 0.0

    def prom(self, sample: str, **labels: str) -> float:
        wanted = {"db_client_connection_pool_name": self.pool_name, **labels}
        text_ = generate_latest(self.prometheus).decode()
        for family in text_string_to_metric_families(text_):
            for s in family.samples:
                if s.name == sample and all(s.labels.get(k) == v for k, v in wanted.items()):
                    return float(s.value)
        raise AssertionError(f"no {sample} {wanted} in:\n{text_}")

    def close(self) -> None:
        self.exporter.close()
        self.provider.shutdown()


@pytest.fixture
def pool_name() -> str:
    return f"bento-metrics-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def readers(pool_name: str) -> Iterator[Readers]:
    readers = Readers(pool_name)
    yield readers
    readers.close()


def _engine(url: str, pool_name: str, **settings: Any) -> AsyncEngine:
    config = DatabaseConfig(url=url, pool_name=pool_name, application_name=pool_name, **settings)
    return create_async_engine_from_config(config)


async def _hold(engine: AsyncEngine, count: int) -> list[AsyncConnection]:
    connections = [await engine.connect() for _ in range(count)]
    for connection in connections:
        await connection.execute(text("SELECT 1"))
    return connections


MYSQL_USER = "bento_metrics"


async def _url(kind: str) -> str:
    """PostgreSQL: the server (connections are told apart by application_name); MariaDB: a
    dedicated user (its process list shows no program name)."""
    if kind == "postgresql":
        return require_server(kind)
    return await create_password_user(kind, MYSQL_USER)


async def _server_connections(kind: str, pool_name: str) -> int:
    """How many connections the server has for this test's engine."""
    admin = create_async_engine_from_config(DatabaseConfig(url=require_server(kind), metrics=False))
    try:
        async with admin.connect() as connection:
            # each look afresh: PostgreSQL keeps one pg_stat_activity view per transaction
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            if kind == "postgresql":
                query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"
            else:
                query = "SELECT count(*) FROM information_schema.processlist WHERE user = :u"
                pool_name = MYSQL_USER
            counts: list[int] = []
            for _ in range(50):  # the server notices a close a moment later: wait until steady
                result = await connection.execute(text(query), {"n": pool_name, "u": pool_name})
                counts.append(int(result.scalar_one()))
                if len(counts) >= 3 and len(set(counts[-3:])) == 1:
                    break
                await asyncio.sleep(0.05)
            return counts[-1]
    finally:
        await admin.dispose()


async def test_every_name_is_exported(
    readers: Readers, server_backend: str, pool_name: str
) -> None:
    engine = _engine(await _url(server_backend), pool_name)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("SELECT 1"))
        assert set(readers.otel_points()) >= OTEL_NAMES
        text_ = generate_latest(readers.prometheus).decode()
        samples = {s.name for f in text_string_to_metric_families(text_) for s in f.samples}
        assert samples >= PROMETHEUS_SAMPLES
        assert f'db_client_connection_pool_name="{pool_name}"' in text_
    finally:
        await engine.dispose()


async def test_counts_follow_the_pool_under_load(
    readers: Readers, server_backend: str, pool_name: str
) -> None:
    engine = _engine(require_server(server_backend), pool_name, pool_size=4, max_overflow=2)
    try:
        held = await _hold(engine, 5)
        for read in (readers.otel, readers.prom):
            name = (
                "db.client.connection.count"
                if read == readers.otel
                else "db_client_connection_count"
            )
            key = (
                "db.client.connection.state"
                if read == readers.otel
                else "db_client_connection_state"
            )
            assert read(name, **{key: "used"}) == 5
            assert read(name, **{key: "idle"}) == 0
        for connection in held[:3]:
            await connection.close()
        assert readers.prom("db_client_connection_count", db_client_connection_state="used") == 2
        assert readers.prom("db_client_connection_count", db_client_connection_state="idle") == 3
        assert engine.pool.checkedout() == 2  # type: ignore[attr-defined]
        assert readers.prom("db_client_connection_max") == 6
        assert readers.otel("db.client.connection.max") == 6
        for connection in held[3:]:
            await connection.close()
    finally:
        await engine.dispose()
    assert readers.prom("db_client_connection_count", db_client_connection_state="idle") == 0


async def test_waiters_timeouts_and_checkout_counts(
    readers: Readers, server_backend: str, pool_name: str
) -> None:
    engine = _engine(
        require_server(server_backend), pool_name, pool_size=1, max_overflow=0, pool_timeout=0.3
    )
    try:
        (held,) = await _hold(engine, 1)
        waiters = [asyncio.ensure_future(_hold(engine, 1)) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert readers.prom("db_client_connection_pending_requests") == 3
        assert readers.otel("db.client.connection.pending_requests") == 3
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, PoolTimeout) for r in results)
        assert readers.prom("db_client_connection_pending_requests") == 0
        assert readers.prom("db_client_connection_timeouts_total") == 3
        assert readers.otel("db.client.connection.timeouts") == 3
        await held.close()
        for _ in range(4):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        # 1 + 4 checkouts got a connection; each came back and was measured
        assert readers.prom("db_client_connection_wait_time_seconds_count") == 5
        assert readers.prom("db_client_connection_use_time_seconds_count") == 5
        assert readers.otel("db.client.connection.wait_time") == 5
        assert readers.otel("db.client.connection.use_time") == 5
        assert readers.prom("db_client_connection_create_time_seconds_count") == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("mode", ["graceful", "immediate", "force"])
async def test_counts_stay_exact_through_a_drain(
    readers: Readers, server_backend: str, pool_name: str, mode: str
) -> None:
    engine = _engine(await _url(server_backend), pool_name, pool_size=3, max_overflow=2)
    try:
        held = await _hold(engine, 4)
        for connection in held[:2]:
            await connection.close()

        async def release_later() -> None:
            await asyncio.sleep(0.2)
            for connection in held[2:]:
                with contextlib.suppress(Exception):  # FORCE closed it under us
                    await connection.close()

        releasing = asyncio.ensure_future(release_later())
        await drain_connections(engine, timeout=5, mode=mode)
        await releasing
        open_ = readers.prom("db_client_connection_count", db_client_connection_state="idle")
        used = readers.prom("db_client_connection_count", db_client_connection_state="used")
        assert used == 0
        assert open_ == await _server_connections(server_backend, pool_name) == 0
    finally:
        await engine.dispose()


def test_counts_stay_exact_across_event_loops(
    readers: Readers, server_backend: str, pool_name: str
) -> None:
    engine = _engine(asyncio.run(_url(server_backend)), pool_name, pool_size=2, max_overflow=0)
    discards_before = REGISTRY.counters.discards.get("other_loop", 0)
    for _ in range(3):  # each new loop discards the previous loop's two connections
        asyncio.run(_use(engine))
    assert REGISTRY.counters.discards.get("other_loop", 0) - discards_before == 4
    idle = readers.prom("db_client_connection_count", db_client_connection_state="idle")
    assert idle == asyncio.run(_server_connections(server_backend, pool_name)) == 2
    asyncio.run(engine.dispose())
    assert readers.prom("db_client_connection_count", db_client_connection_state="idle") == 0


async def _use(engine: AsyncEngine) -> None:
    for connection in await _hold(engine, 2):
        await connection.close()


async def test_operations_carry_their_attributes(
    readers: Readers, server_backend: str, pool_name: str
) -> None:
    engine = _engine(require_server(server_backend), pool_name)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE IF EXISTS bento_metric_op"))
            await connection.execute(text("CREATE TABLE bento_metric_op (id int PRIMARY KEY)"))
        from sqlalchemy import Column, Integer, MetaData, Table, insert, select

        table = Table("bento_metric_op", MetaData(), Column("id", Integer, primary_key=True))
        async with engine.begin() as connection:
            await connection.execute(insert(table).values(id=1))
            await connection.execute(select(table))
        with pytest.raises(Exception, match="bento_metric_op"):
            async with engine.begin() as connection:
                await connection.execute(insert(table).values(id=1))
    finally:
        await engine.dispose()
    system = "postgresql" if server_backend == "postgresql" else "mariadb"
    points = readers.otel_points()["db.client.operation.duration"]
    mine = [p.attributes for p in points if p.attributes.get("db.system.name") == system]
    duplicate = "23505" if server_backend == "postgresql" else "1062"
    assert {"db.system.name": system, "db.namespace": "test", "db.operation.name": "INSERT"} in mine
    assert {"db.system.name": system, "db.namespace": "test", "db.operation.name": "SELECT"} in mine
    assert {"db.system.name": system, "db.namespace": "test", "db.operation.name": "COMMIT"} in mine
    assert {
        "db.system.name": system,
        "db.namespace": "test",
        "db.operation.name": "INSERT",
        "error.type": duplicate,
    } in mine
    for attributes in mine:  # never the statement text
        assert not any("bento_metric_op" in str(v) for v in attributes.values())


def test_slow_statements_are_logged_without_parameters(
    server_backend: str, pool_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    sleep = "pg_sleep" if server_backend == "postgresql" else "SLEEP"

    async def work() -> None:
        engine = _engine(require_server(server_backend), pool_name, slow_statement_threshold=0.2)
        async with engine.connect() as connection:
            await connection.execute(text(f"SELECT {sleep}(0.05), :tag"), {"tag": SECRET})
            await connection.execute(text(f"SELECT {sleep}(0.3), :tag"), {"tag": SECRET})
        await engine.dispose()

    with caplog.at_level(logging.WARNING, logger="litestar_bento_db.statements"):
        asyncio.run(work())
    slow = [r for r in caplog.records if r.name == "litestar_bento_db.statements"]
    assert len(slow) == 1
    assert f"{sleep}(0.3)" in slow[0].getMessage()
    assert SECRET not in caplog.text


@get("/leak")
async def leaky(db_session: DbSession) -> dict[str, int]:
    await db_session.execute(text("SELECT 1"))
    await asyncio.sleep(0.6)  # holds its connection past the threshold
    return {"ok": 1}


def test_a_leak_is_reported_once_with_the_handler(server_backend: str, pool_name: str) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("litestar_bento_db.leaks")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    database = DatabaseConfig(
        url=require_server(server_backend), pool_name=pool_name, leak_detection_threshold=0.2
    )
    try:
        with TestClient(Litestar([leaky], plugins=[DatabasePlugin(database)])) as client:
            assert client.get("/leak").json() == {"ok": 1}
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "GET /leak (leaky)" in message
    assert "test_metrics.py" in message
    assert "in leaky" in message
    returned = [r for r in records if r.levelno == logging.INFO]
    assert len(returned) == 1
    assert "came back after" in returned[0].getMessage()


def test_off_switches_cost_nothing(pool_name: str) -> None:
    engine = _engine("sqlite+aiosqlite:///:memory:", pool_name, metrics=False)
    try:
        assert REGISTRY.for_engine(engine) is None
        assert not event.contains(engine.sync_engine.pool, "checkout", lambda *a: None)
        assert len(engine.sync_engine.pool.dispatch.checkout) == 0
        assert engine.sync_engine.dialect.do_execute.__name__ == "do_execute"
    finally:
        asyncio.run(engine.dispose())


@get("/db")
async def touch(db_session: DbSession) -> dict[str, int]:
    return {"n": int((await db_session.execute(text("SELECT 1"))).scalar_one())}


def test_the_plugin_serves_prometheus_and_composes_with_litestars(pool_name: str) -> None:
    database = DatabaseConfig(url="sqlite+aiosqlite:///:memory:", pool_name=pool_name)
    plugin = DatabasePlugin(database, metrics_path="/db-metrics", health=HealthConfig(details=True))
    with TestClient(Litestar([touch], plugins=[plugin])) as client:
        client.get("/db")
        body = client.get("/db-metrics").text
        assert f'db_client_connection_count{{db_client_connection_pool_name="{pool_name}"' in body
        details = client.get("/health").json()["checks"]["database:connections"][0]
        assert {"pool_waiting", "pool_timeouts", "pool_checkouts"} <= set(details)
    # an app with its own PrometheusController: one route serves both
    plugin = DatabasePlugin(database, metrics_path="/db-metrics")
    with TestClient(Litestar([touch, PrometheusController], plugins=[plugin])) as client:
        client.get("/db")
        assert client.get("/db-metrics").status_code == 404
        assert f'pool_name="{pool_name}"' in client.get("/metrics").text


async def test_a_connection_returned_after_dispose_is_closed_and_counted(
    readers: Readers, server_backend: str, pool_name: str
) -> None:
    engine = _engine(await _url(server_backend), pool_name, pool_size=2)
    try:
        (held,) = await _hold(engine, 1)
        await engine.dispose()  # while it is checked out
        await held.close()
        assert readers.prom("db_client_connection_count", db_client_connection_state="idle") == 0
        assert await _server_connections(server_backend, pool_name) == 0
    finally:
        await engine.dispose()
