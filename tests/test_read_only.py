"""A primary that is not one any more: read-only refusals on real servers.

The primary's URL reaching a hot standby (what a DNS name or a virtual IP does after a
failover: here a proxy moved from the standby to the primary), a primary switched to
read-only under write load (PostgreSQL ``default_transaction_read_only`` + reload,
MariaDB ``SET GLOBAL read_only=1`` for a user without SUPER): writes are answered 503 +
``Retry-After``, never 500; the pool is replaced once per event, logged once; readiness
fails while the server is read-only and recovers by itself. Replicas keep their own
handling (tests/test_replicas.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from litestar import Litestar, get, post
from litestar.params import FromPath
from litestar.testing import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from litestar_bento_db import (
    DatabaseConfig,
    DatabasePlugin,
    DbSession,
    HealthConfig,
    create_async_engine_from_config,
)
from litestar_bento_db._counters import COUNTERS
from litestar_bento_db.lifecycle import probe
from litestar_bento_db.metrics import REGISTRY
from litestar_bento_db.metrics.prometheus import DatabaseCollector
from litestar_bento_db.resilience import DatabaseErrorClassifier, ErrorCategory
from tests.conftest import create_password_user, records_of, require_replica, require_server
from tests.load import assert_no_harm, load_around, report_of, start_app
from tests.proxy import TcpProxy
from tests.servers import Server
from tests.test_chaos import _prepare, _stored

HEALTH = "/health"
MOVED = "refused a write as read-only"


@post("/items/{key:str}", status_code=201)
async def write(db_session: DbSession, key: FromPath[str]) -> dict[str, str]:
    await db_session.execute(text("INSERT INTO bento_ro (k) VALUES (:k)"), {"k": key})
    # held a moment, so that concurrent requests take distinct pooled connections
    await db_session.execute(text("SELECT pg_sleep(0.2)"))
    return {"key": key}


@get("/count")
async def count(db_session: DbSession) -> int:
    return int((await db_session.execute(text("SELECT count(*) FROM bento_ro"))).scalar_one())


def _app(url: str) -> Litestar:
    config = DatabaseConfig(
        url=url, pool_size=3, max_overflow=0, warmup_connections=3, pool_name="ro"
    )
    health = HealthConfig(path=HEALTH, cache_ttl=0, details=True, retry_after=3)
    return Litestar(route_handlers=[write, count], plugins=[DatabasePlugin(config, health=health)])


async def _admin(url: str, *statements: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=url))
    try:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
def table() -> None:
    asyncio.run(
        _admin(
            require_server("postgresql"),
            "DROP TABLE IF EXISTS bento_ro",
            "CREATE TABLE bento_ro (k varchar(40) PRIMARY KEY)",
        )
    )


@pytest.fixture
def moves_log() -> Iterator[list[logging.LogRecord]]:
    with records_of("litestar_bento_db.resilience.failover") as records:
        yield records


def _wait_for_replay(primary: str, replica: str) -> None:
    """Until the standby has replayed the primary's latest WAL (the table exists there)."""

    async def wait() -> None:
        engine = create_async_engine_from_config(DatabaseConfig(url=replica))
        try:
            for _ in range(100):
                async with engine.connect() as connection:
                    result = await connection.execute(text("SELECT to_regclass('bento_ro')"))
                    if result.scalar() is not None:
                        return
                await asyncio.sleep(0.05)
            raise AssertionError("the standby did not replay the table")
        finally:
            await engine.dispose()

    asyncio.run(wait())


@pytest.mark.usefixtures("table")
def test_a_primary_url_that_reaches_a_standby(moves_log: list[logging.LogRecord]) -> None:
    """A VIP that moves: pooled connections stay on the standby, new ones reach the primary."""
    primary, replica = require_server("postgresql"), require_replica()
    _wait_for_replay(primary, replica)
    standby = DatabaseConfig(url=replica).sqlalchemy_url
    proxy = TcpProxy(standby.host or "127.0.0.1", standby.port or 5433)
    proxy.on()
    url = standby.set(port=proxy.port).render_as_string(hide_password=False)
    moves = COUNTERS.primary_moves.get("ro", 0)
    refusals = COUNTERS.read_only_refusals.get("ro", 0)
    try:
        with TestClient(_app(url)) as client:
            # the standby behind the primary's URL: reads work, writes and readiness fail
            assert client.get("/count").status_code == 200
            ready = client.get(f"{HEALTH}/readiness")
            assert ready.status_code == 503
            assert ready.json() == {"status": "fail", "output": "primary is read-only"}
            assert ready.headers["retry-after"] == "3"
            details = client.get(HEALTH).json()
            assert details["checks"]["database:writable"][0]["observedValue"] is False

            # the VIP moves to the primary: new connections reach it, the three pooled
            # ones stay on the standby
            proxy.target = ("127.0.0.1", DatabaseConfig(url=primary).sqlalchemy_url.port or 5432)
            refused = client.post("/items/a")
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "3"
            assert "read-only" not in refused.text  # the generic 503 detail, no SQL
            assert COUNTERS.primary_moves.get("ro", 0) == moves + 1
            # that one refusal replaced the whole pool: the other two stale connections
            # are not used (three concurrent writes take three connections)
            with ThreadPoolExecutor(3) as threads:
                answers = threads.map(lambda n: client.post(f"/items/b{n}"), range(3))
                statuses = [answer.status_code for answer in answers]
            assert statuses == [201] * 3, statuses
            assert COUNTERS.read_only_refusals.get("ro", 0) == refusals + 1
            assert client.get(f"{HEALTH}/readiness").status_code == 200
            assert client.get(HEALTH).json()["checks"]["database:writable"][0]["observedValue"]
            assert len([r for r in moves_log if MOVED in r.getMessage()]) == 1
    finally:
        proxy.close()
    prometheus = CollectorRegistry()
    prometheus.register(DatabaseCollector(REGISTRY))
    exported = generate_latest(prometheus).decode()
    label = 'db_client_connection_pool_name="ro"'
    assert f"bento_db_primary_moves_total{{{label}}} {float(moves + 1)}" in exported
    assert f"bento_db_primary_read_only_refusals_total{{{label}}} {float(refusals + 1)}" in exported


async def _set_read_only(kind: str, on: bool) -> None:
    """The shared server read-only for new transactions, or writable again."""
    if kind == "postgresql":
        setting = (
            "ALTER SYSTEM SET default_transaction_read_only = on"
            if on
            else "ALTER SYSTEM RESET default_transaction_read_only"
        )
        await _admin(require_server(kind), setting, "SELECT pg_reload_conf()")
    else:  # refuses the writes of users without SUPER (READ ONLY ADMIN)
        await _admin(require_server(kind), f"SET GLOBAL read_only = {int(on)}")


@contextlib.contextmanager
def _read_only_server(kind: str) -> Iterator[None]:
    """The shared server read-only while inside; always undone."""
    asyncio.run(_set_read_only(kind, True))
    try:
        yield
    finally:
        asyncio.run(_set_read_only(kind, False))


async def _refusal(url: str, *statements: str) -> BaseException:
    engine = create_async_engine_from_config(DatabaseConfig(url=url))
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    except DBAPIError as error:
        return error
    finally:
        await engine.dispose()
    raise AssertionError("no refusal")


def test_mariadb_read_only_refusals_are_read_only() -> None:
    """1290 (read_only, a user without SUPER) and 1792 (a read-only transaction)."""
    user_url = asyncio.run(create_password_user("mysql", "bento_ro_user"))
    asyncio.run(
        _admin(
            require_server("mysql"),
            "DROP TABLE IF EXISTS bento_ro",
            "CREATE TABLE bento_ro (k varchar(40) PRIMARY KEY)",
        )
    )
    insert = "INSERT INTO bento_ro (k) VALUES ('x')"
    with _read_only_server("mysql"):
        option = asyncio.run(_refusal(user_url, insert))
    transaction = asyncio.run(_refusal(user_url, "START TRANSACTION READ ONLY", insert))
    assert DatabaseErrorClassifier.error_code(option) == 1290
    assert DatabaseErrorClassifier.error_code(transaction) == 1792
    for error in (option, transaction):
        assert DatabaseErrorClassifier.classify(error) is ErrorCategory.READ_ONLY


def test_postgresql_standby_refusal_is_read_only() -> None:
    error = asyncio.run(_refusal(require_replica(), "CREATE TABLE bento_never (i int)"))
    assert DatabaseErrorClassifier.error_code(error) == "25006"
    assert DatabaseErrorClassifier.classify(error) is ErrorCategory.READ_ONLY


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_a_primary_turning_read_only_under_write_load(
    kind: str, tmp_path: Path, servers: list[Server]
) -> None:
    """16 writers; the server read-only for 2 s: 503s, never a 500; logged once."""

    async def read_only_for_2_s() -> tuple[float, float]:
        broke = time.monotonic()
        await _set_read_only(kind, True)
        try:
            await asyncio.sleep(2.0)
        finally:
            await _set_read_only(kind, False)
        return broke, time.monotonic()

    server = await start_app(tmp_path, servers, await _prepare(kind))
    load, broke, back = await load_around(server, read_only_for_2_s, after=2.5)
    report = report_of(kind, "read-only", load, await _stored(kind), broke, back)
    assert report.unavailable > 0, report  # the writes really were refused
    assert_no_harm(report, load)
    assert report.readiness_failed, report
    assert report.recovery_s is not None, report
    assert report.recovery_s <= 2.0, report
    # logged once for the whole event, not once per refused request
    assert server.output().count(MOVED) == 1, server.output()[-3000:]


@pytest.mark.parametrize(
    ("answer", "read_only"),
    [("0", False), ("1", True), ("'OFF'", False), ("'ON'", True), ("'NO_LOCK'", True)],
)
async def test_read_only_answers_are_read_as_the_servers_give_them(
    answer: str, read_only: bool
) -> None:
    """MySQL's read_only is 0/1; newer MariaDB's an ENUM (OFF, ON, NO_LOCK, ...)."""
    engine = create_async_engine_from_config(DatabaseConfig(url="sqlite+aiosqlite:///:memory:"))
    try:
        result = await probe(engine, timeout=5, read_only_query=f"SELECT {answer}")
    finally:
        await engine.dispose()
    assert result.ok
    assert result.read_only is read_only


@pytest.mark.usefixtures("table")
async def test_a_read_only_transaction_the_app_asked_for_is_not_a_move() -> None:
    """``postgresql_readonly``: the refusal is the app's own; the pool stays."""
    engine = create_async_engine_from_config(
        DatabaseConfig(url=require_server("postgresql"), pool_name="ro-own")
    )
    try:
        async with engine.connect() as connection:
            own = await connection.execution_options(postgresql_readonly=True)
            with pytest.raises(DBAPIError) as refused:
                await own.execute(text("INSERT INTO bento_ro (k) VALUES ('own')"))
        assert DatabaseErrorClassifier.classify(refused.value) is ErrorCategory.READ_ONLY
        assert not refused.value.connection_invalidated
        assert COUNTERS.primary_moves.get("ro-own", 0) == 0
    finally:
        await engine.dispose()
