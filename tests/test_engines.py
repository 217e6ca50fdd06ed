"""Dialect engines: their settings, and what a real connection ends up with."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool, StaticPool

from litestar_bento_db import (
    DatabaseConfig,
    LoopBoundPool,
    MySQLEngine,
    PostgreSQLEngine,
    SQLiteEngine,
    create_async_engine_from_config,
    get_engine_for_config,
)


@pytest.mark.parametrize(
    ("url", "cls", "pooled", "json_type"),
    [
        ("postgresql://u@h/d", PostgreSQLEngine, True, "JSONB"),
        ("mysql://u@h/d", MySQLEngine, True, "JSON"),
        ("sqlite:///x.db", SQLiteEngine, False, "JSON"),
    ],
)
def test_engine_selection(url: str, cls: type, pooled: bool, json_type: str) -> None:
    dialect = get_engine_for_config(DatabaseConfig(url=url))
    assert type(dialect) is cls
    assert dialect.supports_pool is pooled
    assert dialect.json_column_type == json_type


def test_dialect_engine_refuses_another_database() -> None:
    with pytest.raises(ValueError, match="PostgreSQLEngine configures postgresql, not mysql"):
        PostgreSQLEngine(DatabaseConfig(url="mysql://u:pw@h/d"))


def test_postgresql_settings() -> None:
    config = DatabaseConfig(url="postgresql://u@h/d", pool_size=20, command_timeout=60)
    dialect = PostgreSQLEngine(config)
    assert dialect.get_connect_args() == {
        "timeout": 10.0,
        "command_timeout": 60.0,
        "server_settings": {"application_name": "litestar-bento-db", "jit": "off"},
    }
    pool = dialect.get_pool_kwargs()
    assert pool["poolclass"] is LoopBoundPool
    assert pool["pool_use_lifo"] is True
    # reported as configured (the usage guide's figure); the engine plugin hands it to
    # the liveness checks instead of SQLAlchemy's pool (tests/test_liveness.py)
    assert (pool["pool_size"], pool["max_overflow"], pool["pool_pre_ping"]) == (20, 10, True)
    assert dialect.checks_liveness
    kwargs = dialect.get_engine_kwargs()
    assert kwargs["echo"] is False
    assert kwargs["connect_args"] == dialect.get_connect_args()
    assert kwargs["plugins"] == ["litestar_bento_db"]


def test_psycopg_settings() -> None:
    config = DatabaseConfig(
        url="postgresql+psycopg://u@h/d", connect_timeout=2.5, command_timeout=1.5
    )
    args = PostgreSQLEngine(config).get_connect_args()
    assert args["connect_timeout"] == 3  # libpq: whole seconds
    assert args["application_name"] == "litestar-bento-db"
    assert args["options"] == "-c jit=off -c statement_timeout=1500"
    assert callable(args["async_creator_fn"])
    assert "prepare_threshold" not in args
    bouncer = PostgreSQLEngine(
        DatabaseConfig(url="postgresql+psycopg://u@h/d", pgbouncer=True)
    ).get_connect_args()
    assert bouncer["prepare_threshold"] is None
    assert "options" not in bouncer  # PgBouncer refuses startup options
    no_limit = PostgreSQLEngine(
        DatabaseConfig(url="postgresql+psycopg://u@h/d", command_timeout=0)
    ).get_connect_args()
    assert no_limit["options"] == "-c jit=off"


def test_postgresql_pgbouncer_mode() -> None:
    args = PostgreSQLEngine(
        DatabaseConfig(url="postgresql://u@h/d", pgbouncer=True)
    ).get_connect_args()
    assert args["statement_cache_size"] == 0
    assert args["prepared_statement_cache_size"] == 0
    names = {args["prepared_statement_name_func"]() for _ in range(100)}
    assert len(names) == 100
    assert "jit" not in args["server_settings"]


def test_mysql_statements_follow_the_server_flavour() -> None:
    dialect = MySQLEngine(DatabaseConfig(url="mysql://u@h/d", pool_recycle=1800, command_timeout=5))
    assert dialect.session_statements("10.11.6-MariaDB") == [
        "SET SESSION wait_timeout = 1860, max_statement_time = 5"
    ]
    assert dialect.session_statements("8.0.36") == [
        "SET SESSION wait_timeout = 1860, max_execution_time = 5000"
    ]
    assert dialect.get_connect_args()["charset"] == "utf8mb4"


def test_sqlite_pools() -> None:
    memory = SQLiteEngine(DatabaseConfig(url="sqlite:///:memory:"))
    assert memory.get_pool_kwargs() == {"poolclass": StaticPool}
    file = SQLiteEngine(DatabaseConfig(url="sqlite:///x.db", connect_timeout=2))
    assert file.get_pool_kwargs() == {"poolclass": NullPool}
    assert "PRAGMA busy_timeout = 2000" in file.pragmas()
    assert "PRAGMA journal_mode = WAL" in file.pragmas()
    assert "PRAGMA journal_mode = WAL" not in memory.pragmas()


async def test_postgresql_connection_has_the_server_settings() -> None:
    from tests.conftest import require_server

    config = DatabaseConfig(url=require_server("postgresql"), application_name="bento-engine-test")
    engine = create_async_engine_from_config(config)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SHOW jit"))).scalar() == "off"
            name = await connection.execute(text("SELECT current_setting('application_name')"))
            assert name.scalar() == "bento-engine-test"
        assert isinstance(engine.pool, LoopBoundPool)
    finally:
        await engine.dispose()


async def test_mysql_connection_has_the_session_limits() -> None:
    from tests.conftest import require_server

    config = DatabaseConfig(url=require_server("mysql"), pool_recycle=600, command_timeout=7)
    engine = create_async_engine_from_config(config)
    try:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT @@session.wait_timeout, @@session.max_statement_time, "
                        "@@character_set_connection, @@global.wait_timeout"
                    )
                )
            ).one()
        assert row[0] == 660 > config.pool_recycle
        assert float(row[1]) == 7.0
        assert row[2] == "utf8mb4"
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite_file", "sqlite_memory"])
async def test_sqlite_pragmas_on_every_connection(engine: AsyncEngine, backend: str) -> None:
    for _ in range(2):
        async with engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await connection.execute(text("PRAGMA busy_timeout"))).scalar() == 10000
            mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar()
            assert mode == ("wal" if backend == "sqlite_file" else "memory")


async def test_sqlite_memory_database_is_shared_between_connections() -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url="sqlite:///:memory:"))
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE kept (id INTEGER PRIMARY KEY)"))
            await connection.execute(text("INSERT INTO kept VALUES (1)"))

        async def count() -> int:
            async with engine.connect() as connection:
                return int(
                    (await connection.execute(text("SELECT count(*) FROM kept"))).scalar_one()
                )

        assert list(await asyncio.gather(count(), count())) == [1, 1]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "mysql://u@h/db", "sqlite:///x.db"])
def test_engine_has_no_statement_level_listeners(url: str) -> None:
    # engine-level listeners make every statement of every connection dispatch its
    # execution events; the on_connect hook and commit tracking must not need them
    engine = get_engine_for_config(DatabaseConfig(url=url)).create_engine()
    assert engine.sync_engine._has_events is False


@pytest.mark.parametrize(
    ("url", "metrics", "expected"),
    [
        ("postgresql://u@h/db", True, 1),  # timing and the first-statement replay
        ("postgresql+psycopg://u@h/db", False, 1),  # replay and psycopg's stall timer
        ("mysql://u@h/db", False, 1),  # replay
        ("sqlite:///x.db", True, 1),  # timing
        ("sqlite:///x.db", False, 0),  # nothing to add
    ],
)
def test_one_execute_listener_per_call_or_none(url: str, metrics: bool, expected: int) -> None:
    """instrumentation.install() puts one layered listener on each do_execute* event."""
    engine = get_engine_for_config(DatabaseConfig(url=url, metrics=metrics)).create_engine()
    dispatch = engine.sync_engine.dialect.dispatch
    for name in ("do_execute", "do_execute_no_params", "do_executemany"):
        assert len(getattr(dispatch, name)) == expected, name
    # the error hook; on a server's primary also the failover watch (resilience.failover)
    assert len(dispatch.handle_error) == (1 if url.startswith("sqlite") else 2)
    replica = DatabaseConfig(url=url, metrics=metrics, expect_writable=False)
    replica_engine = get_engine_for_config(replica).create_engine()
    assert len(replica_engine.sync_engine.dialect.dispatch.handle_error) == 1
