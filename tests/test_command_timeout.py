"""``command_timeout`` really cancels a long statement on the server databases."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import make_url, text

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config

SLEEP = {"postgresql": "SELECT pg_sleep(5)", "mysql": "SELECT SLEEP(5)"}


async def test_long_statement_is_cancelled(server_backend: str, server_url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=server_url, command_timeout=0.5))
    try:
        async with engine.connect() as connection:
            started = time.perf_counter()
            with pytest.raises(Exception) as caught:  # noqa: PT011 - the drivers differ
                await connection.execute(text(SLEEP[server_backend]))
            elapsed = time.perf_counter() - started
        assert 0.4 < elapsed < 3.0, elapsed
        if server_backend == "mysql":
            assert caught.value.orig.args[0] == 1969  # type: ignore[attr-defined]
        elif make_url(server_url).get_driver_name() == "psycopg":  # the server's statement_timeout
            assert caught.value.orig.sqlstate == "57014"  # type: ignore[attr-defined]
        else:  # asyncpg's own command_timeout
            assert isinstance(caught.value, TimeoutError)
        # the pool still works afterwards
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_zero_disables_the_limit(server_backend: str, server_url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=server_url, command_timeout=0))
    query = {"postgresql": "SELECT pg_sleep(0.7)", "mysql": "SELECT SLEEP(0.7)"}[server_backend]
    try:
        async with engine.connect() as connection:
            await connection.execute(text(query))
    finally:
        await engine.dispose()
