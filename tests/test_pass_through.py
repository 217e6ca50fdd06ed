"""Options passed through to SQLAlchemy and the driver: JSON, connect hooks, engine and
session options, and a pool-less mode, on the real databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select, text
from sqlalchemy.pool import NullPool

from litestar_bento_db import (
    ConfigError,
    DatabaseConfig,
    DatabasePlugin,
    create_async_engine_from_config,
)
from tests.conftest import PG_DRIVER, backend_url, database_kind

metadata = MetaData()
documents = Table(
    "bento_pass_json", metadata, Column("id", Integer, primary_key=True), Column("doc", JSON)
)


def _driver_connection_class(kind: str) -> type:
    """The driver's connection class each backend's hook sees."""
    if kind == "mysql":
        from asyncmy.connection import Connection as MySQLConnection

        return MySQLConnection
    if kind == "sqlite":
        import aiosqlite

        return aiosqlite.Connection
    if PG_DRIVER == "psycopg":
        import psycopg

        return psycopg.AsyncConnection
    import asyncpg

    return asyncpg.Connection  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite_file"])
async def test_json_columns_use_the_given_serializer(backend: str, tmp_path: Path) -> None:
    def dumps(value: Any) -> str:
        return json.dumps({"wrapped": value})

    def loads(text_: str) -> Any:
        return json.loads(text_)["wrapped"]

    url = backend_url(backend, tmp_path)
    engine = create_async_engine_from_config(
        DatabaseConfig(url=url, json_serializer=dumps, json_deserializer=loads)
    )
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.drop_all)
            await connection.run_sync(metadata.create_all)
            await connection.execute(insert(documents).values(id=1, doc={"a": [1, 2]}))
        async with engine.connect() as connection:
            assert (await connection.execute(select(documents.c.doc))).scalar_one() == {"a": [1, 2]}
            as_text = "CHAR" if database_kind(backend) == "mysql" else "TEXT"
            raw = f"SELECT CAST(doc AS {as_text}) FROM bento_pass_json"
            stored = (await connection.execute(text(raw))).scalar_one()
        assert json.loads(stored) == {"wrapped": {"a": [1, 2]}}  # what our serializer wrote
    finally:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.drop_all)
        await engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite_file"])
async def test_on_connect_sees_each_new_driver_connection(backend: str, tmp_path: Path) -> None:
    seen: list[Any] = []
    config = DatabaseConfig(
        url=backend_url(backend, tmp_path),
        on_connect=seen.append,
        pool_size=1,
        max_overflow=1,
    )
    engine = create_async_engine_from_config(config)
    try:
        async with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                await connection.execute(text("SELECT 1"))
        async with engine.connect() as again:  # pooled: no new connection, no call
            await again.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    expected = _driver_connection_class(database_kind(backend))
    pooled = backend != "sqlite_file"  # SQLite files are not pooled: a connect each time
    assert len(seen) == (2 if pooled else 3), seen
    assert all(isinstance(connection, expected) for connection in seen), seen


#: an async hook per server driver: a session setting through the driver's own API
_ASYNC_HOOKS = {
    "asyncpg": lambda c: c.execute("SET application_name = 'bento-hooked'"),
    "psycopg": lambda c: c.execute("SET application_name = 'bento-hooked'"),
}


async def test_an_async_on_connect_is_awaited(server_url: str, server_backend: str) -> None:
    if server_backend == "mysql":

        async def hook(connection: Any) -> None:
            async with connection.cursor() as cursor:
                await cursor.execute("SET @bento_hooked = 'bento-hooked'")

        check = "SELECT @bento_hooked"
    else:

        async def hook(connection: Any) -> None:
            await _ASYNC_HOOKS[PG_DRIVER](connection)

        check = "SELECT current_setting('application_name')"
    engine = create_async_engine_from_config(DatabaseConfig(url=server_url, on_connect=hook))
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text(check))).scalar() == "bento-hooked"
    finally:
        await engine.dispose()


async def test_a_failing_on_connect_fails_the_connect(server_url: str) -> None:
    def hook(_connection: Any) -> None:
        raise RuntimeError("codec setup failed")

    engine = create_async_engine_from_config(DatabaseConfig(url=server_url, on_connect=hook))
    try:
        with pytest.raises(RuntimeError, match="codec setup failed"):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


async def test_engine_options_reach_the_engine(server_url: str) -> None:
    config = DatabaseConfig(
        url=server_url,
        engine_options={"echo_pool": "debug", "execution_options": {"bento_mark": 1}},
    )
    engine = create_async_engine_from_config(config)
    try:
        assert engine.pool.echo == "debug"
        assert engine.get_execution_options()["bento_mark"] == 1
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pool_size": 3}, "pool_size (set by pool_size); not here"),
        ({"poolclass": NullPool}, "poolclass (set by pooling)"),
        ({"connect_args": {}}, "connect_args (set by the URL and the settings"),
        ([("echo_pool", True)], "expected a mapping of create_async_engine() arguments"),
    ],
)
def test_engine_options_refuse_what_the_settings_own(options: Any, message: str) -> None:
    with pytest.raises(ConfigError, match="engine_options: ") as caught:
        DatabaseConfig(url="sqlite+aiosqlite:///:memory:", engine_options=options)
    assert message in str(caught.value)


async def test_without_a_pool_each_checkout_is_a_new_connection(server_url: str) -> None:
    pid = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
    kind = "mysql" if server_url.startswith("mysql") else "postgresql"
    engine = create_async_engine_from_config(DatabaseConfig(url=server_url, pooling=False))
    try:
        assert isinstance(engine.pool, NullPool)
        ids = []
        for _ in range(2):
            async with engine.connect() as connection:
                ids.append((await connection.execute(text(pid[kind]))).scalar())
        assert ids[0] != ids[1]  # closed on return, opened afresh
        assert engine.pool.status().startswith("NullPool")
    finally:
        await engine.dispose()


def test_pooling_reads_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POOLING", "false")
    assert DatabaseConfig(url="postgresql://u@h/d").pooling is False
    monkeypatch.setenv("DB_POOLING", "maybe")
    with pytest.raises(ConfigError, match="DB_POOLING"):
        DatabaseConfig(url="postgresql://u@h/d")


def test_session_options_reach_the_request_sessions() -> None:
    plugin = DatabasePlugin(
        DatabaseConfig(url="sqlite+aiosqlite:///:memory:"),
        session_options={"expire_on_commit": True, "info": {"tenant": "a"}},
    )
    session = plugin.alchemy_config.session_config
    assert session.expire_on_commit is True
    assert session.autoflush is True  # the plugin's default kept
    info = session.info
    assert isinstance(info, dict)
    assert info["tenant"] == "a"
    assert info["enable_cache_listener"] is True  # the plugin's own keys stay
    with pytest.raises(ConfigError, match="session_options: bind not accepted"):
        DatabasePlugin(
            DatabaseConfig(url="sqlite+aiosqlite:///:memory:"), session_options={"bind": 1}
        )
