"""init_database, health_check, get_database_info, cleanup_database, drop_all_tables."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import String, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from litestar_bento_db import (
    DatabaseConfig,
    SchemaMismatchError,
    cleanup_database,
    create_async_engine_from_config,
    drop_all_tables,
    get_database_info,
    health_check,
    init_database,
)
from tests.conftest import PG_DRIVER, PG_SCHEME, SECRET, create_password_user


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "bento_lc_product"
    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(40))
    stock: Mapped[int] = mapped_column(default=0)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


async def test_init_and_drop(engine: AsyncEngine) -> None:
    await drop_all_tables(engine, Base)
    assert "bento_lc_product" not in await _tables(engine)
    await init_database(engine, Base, check_tables=True)
    assert "bento_lc_product" in await _tables(engine)
    await init_database(engine, Base)  # a second run changes nothing
    await drop_all_tables(engine, Base)
    assert "bento_lc_product" not in await _tables(engine)


async def test_check_tables_reports_missing_columns(engine: AsyncEngine) -> None:
    await drop_all_tables(engine, Base)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE bento_lc_product (id INTEGER PRIMARY KEY)"))
    await init_database(engine, Base)  # create_all leaves the old table alone
    with pytest.raises(
        SchemaMismatchError, match=r"bento_lc_product\.sku, bento_lc_product\.stock"
    ):
        await init_database(engine, Base, check_tables=True)
    await drop_all_tables(engine, Base)


async def test_health_check_passes(engine: AsyncEngine) -> None:
    assert await health_check(engine) is True


async def test_health_check_fails_fast_on_a_closed_port() -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=f"{PG_SCHEME}://u@127.0.0.1:1/d"))
    started = time.perf_counter()
    assert await health_check(engine) is False
    assert time.perf_counter() - started < 2
    await engine.dispose()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
async def test_health_check_is_bounded_by_its_timeout(silent_server: int, scheme: str) -> None:
    scheme = PG_SCHEME if scheme == "postgresql" else scheme
    config = DatabaseConfig(url=f"{scheme}://u:{SECRET}@127.0.0.1:{silent_server}/d")
    engine = create_async_engine_from_config(config)
    started = time.perf_counter()
    assert await health_check(engine, timeout=0.5) is False
    assert time.perf_counter() - started < 1.5
    await engine.dispose()


async def test_database_info_reports_pool_figures(engine: AsyncEngine, backend: str) -> None:
    info = await get_database_info(engine)
    expected_type = {"postgresql": "postgresql", "mysql": "mysql"}.get(backend, "sqlite")
    assert info["database_type"] == expected_type
    assert info["driver"] == {"postgresql": PG_DRIVER, "mysql": "asyncmy"}.get(backend, "aiosqlite")
    assert info["reachable"] is True
    assert info["server_version"]
    assert {"pool_size", "pool_checked_out", "pool_checked_in", "pool_overflow"} <= set(info)
    if backend in ("postgresql", "mysql"):
        assert info["database_name"] == "test"
        assert info["pool_size"] == 3
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            held = await get_database_info(engine)
        assert held["pool_checked_out"] == 1
    else:
        assert info["pool_checked_out"] == 0


async def test_cleanup_closes_pooled_connections(server_url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=server_url))
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    assert (await get_database_info(engine))["pool_checked_in"] == 1
    await cleanup_database(engine)
    assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]


# -- a server user with a real password: it never shows up -----------------------


@pytest.fixture
async def password_url(server_backend: str) -> str:
    return await create_password_user(server_backend, "bento_pw")


async def test_password_never_in_info_repr_or_logs(
    password_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = DatabaseConfig(url=password_url)
    engine = create_async_engine_from_config(config)
    info = await get_database_info(engine)
    assert info["reachable"] is True
    assert await health_check(engine)
    await engine.dispose()

    # and a failing one: wrong database, still no password in logs or output
    bad = create_async_engine_from_config(DatabaseConfig(url=password_url + "_missing"))
    bad_info = await get_database_info(bad, timeout=2)
    assert bad_info["reachable"] is False
    await bad.dispose()

    for text_ in (repr(config), str(info), str(bad_info), caplog.text):
        assert SECRET not in text_
    assert "bento_pw" not in str(info)
    assert "127.0.0.1" not in str(info)
