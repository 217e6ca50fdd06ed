"""Draining with real transactions in flight, checked against the server's own view."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from litestar_bento_db import (
    ConnectionDrainer,
    DatabaseConfig,
    DrainingMode,
    create_async_engine_from_config,
    create_async_session_factory,
    drain_connections,
)
from tests.conftest import create_password_user, require_server

USER = "bento_drain"


@dataclass
class Drainable:
    backend: str
    url: str
    admin: AsyncEngine
    engine: AsyncEngine
    factory: async_sessionmaker[AsyncSession]

    async def server_connections(self) -> int:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE usename = :u"
            if self.backend == "postgresql"
            else "SELECT count(*) FROM information_schema.processlist WHERE user = :u"
        )
        async with self.admin.connect() as c:
            return int((await c.execute(text(query), {"u": USER})).scalar_one())

    async def wait_server_connections(self, expected: int, within: float = 3.0) -> int:
        deadline = time.monotonic() + within
        while (count := await self.server_connections()) != expected:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        return count

    async def rows(self) -> list[int]:
        async with self.admin.connect() as c:
            result = await c.execute(text("SELECT id FROM bento_drain ORDER BY id"))
            return [int(r[0]) for r in result]

    async def transaction(
        self, row: int, hold: float, started: list[int], *, busy: bool = False
    ) -> None:
        """Insert a row, hold the connection (in Python or in the server), commit."""
        async with self.factory() as session, session.begin():
            await session.execute(text("INSERT INTO bento_drain VALUES (:id)"), {"id": row})
            started.append(row)
            if busy:
                sleep = (
                    "SELECT pg_sleep(:s)" if self.backend == "postgresql" else "SELECT SLEEP(:s)"
                )
                await session.execute(text(sleep), {"s": hold})
            else:
                await asyncio.sleep(hold)

    async def in_flight(
        self, holds: list[float], *, busy: bool = False
    ) -> list[asyncio.Task[None]]:
        started: list[int] = []
        tasks = [
            asyncio.ensure_future(self.transaction(i, hold, started, busy=busy))
            for i, hold in enumerate(holds)
        ]
        while len(started) < len(holds):
            await asyncio.sleep(0.01)
        if busy:
            await asyncio.sleep(0.1)  # let the sleep statements reach the server
        return tasks


@pytest.fixture
async def drainable(server_backend: str) -> AsyncIterator[Drainable]:
    url = await create_password_user(server_backend, USER)
    admin = create_async_engine_from_config(DatabaseConfig(url=require_server(server_backend)))
    async with admin.begin() as c:
        await c.execute(text("DROP TABLE IF EXISTS bento_drain"))
        await c.execute(text("CREATE TABLE bento_drain (id int PRIMARY KEY)"))
        if server_backend == "postgresql":
            await c.execute(text(f"GRANT ALL ON bento_drain TO {USER}"))
    engine = create_async_engine_from_config(
        DatabaseConfig(url=url, pool_size=5, max_overflow=10, application_name="bento-drain")
    )
    yield Drainable(server_backend, url, admin, engine, create_async_session_factory(engine))
    await engine.dispose()
    await admin.dispose()


HOLDS = [0.3 + 0.05 * i for i in range(10)]  # the longest: 0.75 s


async def test_graceful_waits_for_every_transaction(drainable: Drainable) -> None:
    tasks = await drainable.in_flight(HOLDS)
    stats = await ConnectionDrainer(drainable.engine, timeout=5, check_interval=0.02).drain()
    await asyncio.gather(*tasks)
    assert stats["success"] is True
    assert stats["mode"] == "graceful"
    assert stats["connections_at_start"] == 10
    assert stats["connections_at_end"] == 0
    assert max(HOLDS) - 0.2 < stats["time_taken"] < max(HOLDS) + 0.5
    assert await drainable.rows() == list(range(10))
    assert await drainable.wait_server_connections(0) == 0
    # the engine still works after a drain (a new pool), then can be disposed
    async with drainable.engine.connect() as c:
        assert (await c.execute(text("SELECT 1"))).scalar() == 1


async def test_graceful_timeout_reports_what_is_left(drainable: Drainable) -> None:
    tasks = await drainable.in_flight([1.0] * 10)
    stats = await drain_connections(drainable.engine, timeout=0.2)
    assert stats["success"] is False
    assert stats["connections_at_start"] == 10
    assert stats["connections_at_end"] == 10
    assert 0.2 <= stats["time_taken"] < 0.6
    await asyncio.gather(*tasks)  # not interrupted: they commit
    assert await drainable.rows() == list(range(10))
    # and their connections are closed as they come back
    assert await drainable.wait_server_connections(0) == 0


async def test_immediate_closes_idle_now_and_lets_work_commit(drainable: Drainable) -> None:
    tasks = await drainable.in_flight([0.8] * 3)
    # and five idle connections in the pool
    idle = [await drainable.engine.connect() for _ in range(5)]
    for connection in idle:
        await connection.execute(text("SELECT 1"))
    for connection in idle:
        await connection.close()
    assert await drainable.server_connections() == 8
    drain = asyncio.ensure_future(
        drain_connections(drainable.engine, timeout=5, mode=DrainingMode.IMMEDIATE)
    )
    # idle ones are gone at once, the three in use are still there
    assert await drainable.wait_server_connections(3, within=0.5) == 3
    stats = await drain
    await asyncio.gather(*tasks)
    assert stats["success"] is True
    assert stats["connections_at_start"] == 3
    assert stats["connections_at_end"] == 0
    assert 0.5 < stats["time_taken"] < 1.3  # it waited for the three to come back
    assert await drainable.rows() == [0, 1, 2]
    assert await drainable.wait_server_connections(0) == 0


@pytest.mark.parametrize("busy", [False, True], ids=["idle-in-transaction", "running-query"])
async def test_force_rolls_back_in_flight_work(drainable: Drainable, busy: bool) -> None:
    tasks = await drainable.in_flight([1.0] * 10, busy=busy)
    started = time.monotonic()
    stats = await drain_connections(drainable.engine, timeout=3, mode=DrainingMode.FORCE)
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert stats["connections_at_start"] == 10
    assert stats["connections_at_end"] == 0
    assert stats["success"] is True
    assert stats["time_taken"] < 0.5  # closes, does not wait for the holders
    assert time.monotonic() - started < 3.5
    assert all(isinstance(r, Exception) for r in results), results  # an error, not a hang
    assert await drainable.rows() == []  # rolled back in the database
    assert await drainable.wait_server_connections(0) == 0


async def test_sqlite_without_pool_reports_zeros(tmp_path: Path) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=f"sqlite:///{tmp_path / 'd.db'}"))
    async with engine.connect() as c:
        await c.execute(text("SELECT 1"))
    stats = await drain_connections(engine, timeout=1)
    assert stats["success"] is True
    assert (stats["connections_at_start"], stats["connections_at_end"]) == (0, 0)
    await engine.dispose()


def test_bad_arguments() -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url="sqlite:///:memory:"))
    with pytest.raises(ValueError, match="timeout"):
        ConnectionDrainer(engine, timeout=-1)
    with pytest.raises(ValueError, match="check_interval"):
        ConnectionDrainer(engine, check_interval=0)
    with pytest.raises(ValueError, match="'sideways' is not a valid DrainingMode"):
        ConnectionDrainer(engine, mode="sideways")


# -- SIGTERM to a real process with work in flight -----------------------------------

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, signal, sys
    from sqlalchemy import text
    from litestar_bento_db import (
        DatabaseConfig, create_engine_and_session_factory, drain_with_signal_handler,
    )

    chained = []
    signal.signal(signal.SIGTERM, lambda signum, frame: chained.append(signum))

    async def main(url, hold):
        engine, factory = create_engine_and_session_factory(DatabaseConfig(url=url))

        async def work(i):
            async with factory() as session, session.begin():
                await session.execute(text("INSERT INTO bento_drain VALUES (:i)"), {"i": i})
                await asyncio.sleep(hold)

        handle = await drain_with_signal_handler(engine, timeout=10)
        tasks = [asyncio.ensure_future(work(i)) for i in range(5)]
        while engine.pool.checkedout() < 5:
            await asyncio.sleep(0.01)
        print("READY", flush=True)
        stats = await handle.wait()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await engine.dispose()
        errors = [type(r).__name__ for r in results if isinstance(r, BaseException)]
        print(json.dumps({"stats": stats, "chained": chained, "errors": errors}), flush=True)

    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
    """
)


def _run_and_signal(url: str, hold: float, signals: int) -> tuple[int, dict[str, object]]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, url, str(hold)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "READY"
    for _ in range(signals):
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    out, err = process.communicate(timeout=30)
    assert out.strip(), err
    return process.returncode, json.loads(out.strip().splitlines()[-1])


async def test_sigterm_drains_and_work_in_flight_commits(drainable: Drainable) -> None:
    returncode, report = await asyncio.to_thread(_run_and_signal, drainable.url, 1.0, 1)
    assert returncode == 0
    stats = report["stats"]
    assert isinstance(stats, dict)
    assert stats["success"] is True
    assert stats["connections_at_start"] == 5
    assert report["chained"] == [signal.SIGTERM]  # the previous handler still ran
    assert report["errors"] == []
    assert await drainable.rows() == [0, 1, 2, 3, 4]


async def test_second_sigterm_forces_the_drain(drainable: Drainable) -> None:
    returncode, report = await asyncio.to_thread(_run_and_signal, drainable.url, 2.0, 2)
    assert returncode == 0
    stats = report["stats"]
    assert isinstance(stats, dict)
    assert stats["mode"] == "force"
    assert len(report["errors"]) == 5  # type: ignore[arg-type]
    assert await drainable.rows() == []
