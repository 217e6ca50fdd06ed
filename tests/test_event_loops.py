"""One engine used from several event loops, pre-ping on, never fails."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from tests.conftest import require_server


async def _work(engine: AsyncEngine, concurrency: int = 3) -> list[int]:
    async def one(i: int) -> int:
        async with engine.connect() as connection:
            return int((await connection.execute(text(f"SELECT {i}"))).scalar_one())

    return await asyncio.gather(*(one(i) for i in range(concurrency)))


async def _server_connections(engine: AsyncEngine, application_name: str) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": application_name},
        )
        return int(result.scalar_one())


CONTROL = """
import asyncio, sys
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import create_async_engine
engine = create_async_engine(sys.argv[1], pool_pre_ping=True, pool_size=2)
async def work():
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
asyncio.run(work())
try:
    asyncio.run(work())
except RuntimeError as exc:
    print("FAILED:", exc)
"""


def test_plain_sqlalchemy_engine_fails_across_loops(server_url: str) -> None:
    """The control: a plain engine really fails from a second loop (own process).

    Except on psycopg, whose connections work from any loop (ours still bind them to
    the loop that opened them, so that every driver behaves alike).
    """
    result = subprocess.run(
        [sys.executable, "-c", CONTROL, server_url], capture_output=True, text=True, timeout=60
    )
    if make_url(server_url).get_driver_name() == "psycopg":
        assert result.returncode == 0, result.stderr
        assert "FAILED:" not in result.stdout
        return
    assert "FAILED:" in result.stdout
    assert "attached to a different loop" in result.stdout or "is closed" in result.stdout


def test_engine_survives_asyncio_run_repeatedly(server_url: str) -> None:
    config = DatabaseConfig(url=server_url, pool_size=2, max_overflow=2, pool_pre_ping=True)
    engine = create_async_engine_from_config(config)
    results = [asyncio.run(_work(engine, concurrency=4)) for _ in range(5)]
    assert results == [[0, 1, 2, 3]] * 5
    asyncio.run(engine.dispose())
    gc.collect()


def test_pool_events_stay_paired_across_loops(server_url: str) -> None:
    """Each discarded other-loop connection fires invalidate and close: counts stay exact."""
    config = DatabaseConfig(url=server_url, pool_size=2, max_overflow=2)
    engine = create_async_engine_from_config(config)
    seen: dict[str, int] = {"connect": 0, "close": 0, "invalidate": 0}
    reasons: list[str] = []

    def count(name: str) -> Any:
        def listener(*args: Any) -> None:
            seen[name] += 1
            if name == "invalidate" and args[2] is not None:
                reasons.append(type(args[2]).__name__)

        return listener

    for name in seen:
        event.listen(engine.sync_engine.pool, name, count(name))
    for _ in range(4):
        asyncio.run(_work(engine, concurrency=2))
    asyncio.run(engine.dispose())
    gc.collect()
    assert seen["connect"] == 8  # two per loop: the previous loop's are replaced
    assert seen["close"] == seen["connect"]  # none vanished without its close event
    assert seen["invalidate"] == 6
    assert reasons == ["OtherLoopConnection"] * 6


def test_foreign_connections_are_closed_on_the_server() -> None:
    name = "bento-loop-leak"
    url = require_server("postgresql")
    engine = create_async_engine_from_config(
        DatabaseConfig(url=url, pool_size=3, max_overflow=0, application_name=name)
    )
    for _ in range(6):
        asyncio.run(_work(engine, concurrency=3))

    async def settled() -> int:
        for _ in range(50):
            count = await _server_connections(engine, name)
            if count <= 3:
                return count
            await asyncio.sleep(0.1)
        return count

    # six loops of three connections each, yet never more than the pool on the server
    assert asyncio.run(settled()) <= 3
    asyncio.run(engine.dispose())


def test_connection_of_a_loop_running_in_another_thread(server_url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=server_url, pool_size=2))
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        assert asyncio.run_coroutine_threadsafe(_work(engine, 2), other).result(10) == [0, 1]
        assert asyncio.run(_work(engine, 2)) == [0, 1]
        assert asyncio.run_coroutine_threadsafe(_work(engine, 2), other).result(10) == [0, 1]
        asyncio.run_coroutine_threadsafe(engine.dispose(), other).result(10)
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(5)
        other.close()


# -- one module-level engine shared by consecutive pytest tests (one loop each) ----

_shared: dict[str, AsyncEngine] = {}


@pytest.fixture(scope="module")
def shared_engines() -> Iterator[dict[str, AsyncEngine]]:
    yield _shared
    for engine in _shared.values():
        asyncio.run(engine.dispose())


@pytest.mark.parametrize("round_", [1, 2, 3])
async def test_module_level_engine_across_pytest_loops(
    shared_engines: dict[str, AsyncEngine], server_backend: str, round_: int
) -> None:
    if server_backend not in shared_engines:
        config = DatabaseConfig(url=require_server(server_backend), pool_size=2)
        shared_engines[server_backend] = create_async_engine_from_config(config)
    assert await _work(shared_engines[server_backend], concurrency=3) == [0, 1, 2]
