"""Overflow connections are kept while needed, then closed, on the server databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from tests.conftest import create_password_user

POOL_SIZE, MAX_OVERFLOW = 2, 3
SERVER_SESSIONS = {
    "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE usename = :name",
    "mysql": "SELECT count(*) FROM information_schema.processlist WHERE user = :name",
}


class Counted:
    """An engine of ours for a user of its own, counting the connections it opens."""

    def __init__(self, engine: AsyncEngine, user: str) -> None:
        self.engine = engine
        self.name = user
        self.opened = 0
        event.listen(self.engine.sync_engine, "connect", self._on_connect)

    @classmethod
    async def create(cls, backend: str, user: str, overflow_idle_timeout: float) -> Counted:
        config = DatabaseConfig(
            url=await create_password_user(backend, user),
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
            overflow_idle_timeout=overflow_idle_timeout,
        )
        return cls(create_async_engine_from_config(config), user)

    def _on_connect(self, *_: Any) -> None:
        self.opened += 1

    async def burst(self, width: int, hold: float = 0.05) -> None:
        """``width`` transactions at once, each holding its connection for ``hold`` s."""

        async def one() -> None:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
                await asyncio.sleep(hold)

        await asyncio.gather(*(one() for _ in range(width)))

    @property
    def pool(self) -> Any:
        return self.engine.pool


@pytest.fixture
async def admin(server_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine_from_config(DatabaseConfig(url=server_url, pool_size=1))
    yield engine
    await engine.dispose()


async def server_sessions(admin: AsyncEngine, backend: str, name: str) -> int:
    async with admin.connect() as connection:
        result = await connection.execute(text(SERVER_SESSIONS[backend]), {"name": name})
        return int(result.scalar_one())


async def test_a_load_just_above_pool_size_reuses_its_connections(
    server_backend: str, server_url: str, admin: AsyncEngine
) -> None:
    kept = await Counted.create(server_backend, "bento_overflow_kept", 30)
    closed = await Counted.create(server_backend, "bento_overflow_closed", 0)
    try:
        for _ in range(10):
            await kept.burst(POOL_SIZE + 1)
            await closed.burst(POOL_SIZE + 1)
        assert kept.opened == POOL_SIZE + 1
        # SQLAlchemy's own behaviour: each burst's third connection is closed on return
        assert closed.opened >= POOL_SIZE + 10
        assert await server_sessions(admin, server_backend, kept.name) == POOL_SIZE + 1
        assert await server_sessions(admin, server_backend, closed.name) == POOL_SIZE
        assert kept.pool.checkedout() == 0
        assert kept.pool.size() == POOL_SIZE
        assert kept.pool.checkedin() == POOL_SIZE + 1
    finally:
        await kept.engine.dispose()
        await closed.engine.dispose()


async def test_overflow_is_closed_once_demand_stays_low(
    server_backend: str, server_url: str, admin: AsyncEngine
) -> None:
    counted = await Counted.create(server_backend, "bento_overflow_expiry", 0.5)
    try:
        await counted.burst(POOL_SIZE + MAX_OVERFLOW)
        assert counted.pool.checkedin() == POOL_SIZE + MAX_OVERFLOW
        await counted.burst(1)  # demand within pool_size, but too soon after the peak
        assert counted.pool.checkedin() == POOL_SIZE + MAX_OVERFLOW
        await asyncio.sleep(0.6)
        await counted.burst(1)
        assert counted.pool.checkedin() == POOL_SIZE
        assert counted.pool.overflow() <= 0
        assert await server_sessions(admin, server_backend, counted.name) == POOL_SIZE
        # the limit still holds, and the pool grows again under load
        await counted.burst(POOL_SIZE + MAX_OVERFLOW)
        assert counted.opened == POOL_SIZE + 2 * MAX_OVERFLOW
    finally:
        await counted.engine.dispose()


async def test_the_setting_survives_dispose(server_backend: str) -> None:
    counted = await Counted.create(server_backend, "bento_overflow_dispose", 30)
    try:
        await counted.burst(POOL_SIZE + 1)
        await counted.engine.dispose()  # SQLAlchemy replaces the pool with pool.recreate()
        assert counted.pool.size() == POOL_SIZE
        opened = counted.opened
        for _ in range(3):
            await counted.burst(POOL_SIZE + 1)
        assert counted.opened == opened + POOL_SIZE + 1
    finally:
        await counted.engine.dispose()
