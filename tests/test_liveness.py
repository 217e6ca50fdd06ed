"""Pre-ping's protection without its round trip: real kills, counted round trips.

Round trips are counted by a TCP proxy between the engine and the server: a
one-statement unit of work on a connection used moments ago costs BEGIN, the
statement and COMMIT (3 on PostgreSQL), one ping more when the connection sat idle,
where SQLAlchemy's own pre-ping costs three more on asyncpg. Killed connections are
replaced without the caller noticing, whether the event loop saw them die or not, and
nothing after the first statement of a transaction is ever run twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from litestar_bento_db import (
    DatabaseConfig,
    create_async_engine_from_config,
    get_engine_for_config,
)
from litestar_bento_db._counters import COUNTERS
from tests.conftest import require_server
from tests.proxy import TcpProxy

IDLE = 0.3  # pre_ping_idle in these tests
REPLAYED = "dead_at_first_statement"  # the discard counter's reason for a replay


def _pid_query(kind: str) -> str:
    return "SELECT pg_backend_pid()" if kind == "postgresql" else "SELECT CONNECTION_ID()"


async def _kill(kind: str, backend: int) -> None:
    admin = create_async_engine_from_config(DatabaseConfig(url=require_server(kind), metrics=False))
    try:
        async with admin.connect() as connection:
            if kind == "postgresql":
                await connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend})
            else:
                await connection.execute(text(f"KILL {int(backend)}"))
    finally:
        await admin.dispose()


def kill_unseen(kind: str, backend: int) -> None:
    """Kill a backend while this thread's event loop is blocked: it cannot see the close."""
    thread = threading.Thread(target=asyncio.run, args=(_kill(kind, backend),))
    thread.start()
    thread.join()
    time.sleep(0.05)  # the server has closed the socket; our loop has not read that yet


@pytest.fixture
async def table(server_backend: str) -> AsyncIterator[str]:
    url = require_server(server_backend)
    admin = create_async_engine_from_config(DatabaseConfig(url=url, metrics=False))
    async with admin.begin() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS bento_live"))
        await connection.execute(text("CREATE TABLE bento_live (id int PRIMARY KEY)"))
    yield url
    await admin.dispose()


def _engine(url: str, built: str = "config", **settings: Any) -> AsyncEngine:
    """Our engine, built by us (``config``) or by hand from the usage guide's kwargs."""
    config = DatabaseConfig(url=url, pool_size=1, max_overflow=0, pre_ping_idle=IDLE, **settings)
    if built == "kwargs":  # create_async_engine(url, **settings.get_engine_kwargs())
        return create_async_engine(config.url, **get_engine_for_config(config).get_engine_kwargs())
    return create_async_engine_from_config(config)


#: how the engine under test is built: by this package, or by hand from get_engine_kwargs()
BUILT = pytest.mark.parametrize("built", ["config", "kwargs"])


async def _backend(engine: AsyncEngine, kind: str) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text(_pid_query(kind)))).scalar_one())


async def _rows(url: str) -> int:
    admin = create_async_engine_from_config(DatabaseConfig(url=url, metrics=False))
    try:
        async with admin.connect() as connection:
            return int(
                (await connection.execute(text("SELECT count(*) FROM bento_live"))).scalar_one()
            )
    finally:
        await admin.dispose()


LIVE = Table("bento_live", MetaData(), Column("id", Integer, primary_key=True))


async def _insert(engine: AsyncEngine, key: int) -> None:
    """A compiled INSERT (MySQL never runs textual SQL twice: it may commit implicitly)."""
    async with async_sessionmaker(engine)() as session:
        await session.execute(insert(LIVE).values(id=key))
        await session.commit()


@pytest.fixture
def proxied(server_backend: str) -> Any:
    target = DatabaseConfig(url=require_server(server_backend)).sqlalchemy_url
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 0)
    proxy.on()
    yield proxy, target.set(port=proxy.port).render_as_string(hide_password=False)
    proxy.close()


async def _round_trips(proxy: TcpProxy, work: Any) -> int:
    proxy.round_trips = 0
    await work()
    await asyncio.sleep(0.05)  # the proxy thread forwards the last reply
    return proxy.round_trips


@BUILT
async def test_round_trips_per_one_statement_unit_of_work(
    server_backend: str, proxied: tuple[TcpProxy, str], built: str
) -> None:
    proxy, url = proxied
    ours = _engine(url, built)
    plain = create_async_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)
    try:

        def select(engine: AsyncEngine) -> Any:
            async def unit_of_work() -> None:
                async with async_sessionmaker(engine)() as session:
                    await session.execute(text("SELECT 1"))
                    await session.commit()

            return unit_of_work

        for engine in (ours, plain):  # open the connection, warm the statement caches
            for _ in range(2):
                await select(engine)()
        busy = await _round_trips(proxy, select(ours))
        await asyncio.sleep(IDLE + 0.1)
        idle = await _round_trips(proxy, select(ours))
        sqlalchemy_pre_ping = await _round_trips(proxy, select(plain))
    finally:
        await ours.dispose()
        await plain.dispose()
    # BEGIN, SELECT, COMMIT (MySQL: no BEGIN, but a ROLLBACK when the connection returns)
    assert busy == 3
    assert idle == busy + 1  # one ping, one round trip
    # asyncpg's pre-ping is a transaction around ";"; psycopg's and MySQL's one round trip
    assert sqlalchemy_pre_ping == (6 if make_url(url).get_driver_name() == "asyncpg" else 4)


async def test_a_connection_killed_while_pooled_is_replaced_without_io(
    server_backend: str, table: str
) -> None:
    engine = _engine(table)
    replays = COUNTERS.discards.get(REPLAYED, 0)
    try:
        victim = await _backend(engine, server_backend)
        await _kill(server_backend, victim)
        await asyncio.sleep(0.05)  # the loop reads the server's goodbye
        await _insert(engine, 1)  # used moments ago: no ping, yet no failure
        assert await _backend(engine, server_backend) != victim
        assert COUNTERS.discards.get(REPLAYED, 0) == replays  # caught at checkout
    finally:
        await engine.dispose()
    assert await _rows(table) == 1


@BUILT
@pytest.mark.parametrize("idle", [False, True])
async def test_a_connection_killed_unseen_is_replaced_transparently(
    server_backend: str, table: str, idle: bool, built: str
) -> None:
    """The loop never saw the kill: a busy connection's first statement runs again on a
    fresh one; an idle one's ping catches it."""
    engine = _engine(table, built)
    before = dict(COUNTERS.discards)
    try:
        for key in range(1, 4):
            victim = await _backend(engine, server_backend)
            if idle:
                await asyncio.sleep(IDLE + 0.1)
            kill_unseen(server_backend, victim)
            await _insert(engine, key)
            assert await _backend(engine, server_backend) != victim
        caught = {k: v - before.get(k, 0) for k, v in COUNTERS.discards.items()}
        # at checkout when the loop had a chance to read the server's goodbye first
        # (SQLAlchemy 2.0's pool yields to it there), else: busy, by running the first
        # statement again; idle, by the ping, before any statement
        last_resort = "failed_ping" if idle else REPLAYED
        never = REPLAYED if idle else "failed_ping"
        assert caught.get(last_resort, 0) + caught.get("closed_while_pooled", 0) == 3
        assert caught.get(never, 0) == 0
    finally:
        await engine.dispose()
    assert await _rows(table) == 3  # each exactly once


async def test_nothing_after_the_first_statement_is_run_again(
    server_backend: str, table: str
) -> None:
    engine = _engine(table)

    async def two_inserts() -> None:
        async with async_sessionmaker(engine)() as session:
            await session.execute(insert(LIVE).values(id=1))
            victim = int((await session.execute(text(_pid_query(server_backend)))).scalar_one())
            kill_unseen(server_backend, victim)
            await session.execute(insert(LIVE).values(id=2))
            await session.commit()

    try:
        with pytest.raises(DBAPIError) as caught:
            await two_inserts()
        assert caught.value.connection_invalidated
        await _insert(engine, 3)  # and the engine goes on
    finally:
        await engine.dispose()
    assert await _rows(table) == 1


async def test_without_pre_ping_an_idle_connection_is_not_pinged(
    proxied: tuple[TcpProxy, str],
) -> None:
    proxy, url = proxied
    counts = {}
    for pre_ping in (True, False):
        engine = _engine(url, pool_pre_ping=pre_ping)
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            await asyncio.sleep(IDLE + 0.1)

            async def select(engine: AsyncEngine = engine) -> None:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))

            counts[pre_ping] = await _round_trips(proxy, select)
        finally:
            await engine.dispose()
    assert counts[True] == counts[False] + 1


async def test_a_replay_keeps_the_metrics_and_leak_detection_right(
    server_backend: str, table: str, caplog: pytest.LogCaptureFixture
) -> None:
    from litestar_bento_db.metrics import REGISTRY

    engine = _engine(table, leak_detection_threshold=5.0, pool_name=f"replay-{server_backend}")
    metrics = REGISTRY.for_engine(engine)
    assert metrics is not None
    try:
        for key in range(1, 4):
            kill_unseen(server_backend, await _backend(engine, server_backend))
            await _insert(engine, key)
        assert (metrics.used, metrics.open) == (0, 1)  # every checkout came back
        assert metrics.use_time.count == metrics.wait_time.count
    finally:
        await engine.dispose()
    assert (metrics.used, metrics.open) == (0, 0)
    assert not [r for r in caplog.records if r.name == "litestar_bento_db.leaks"]
