"""Migrations at startup: the database lock, and 3 servers x 2 workers racing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from advanced_alchemy.extensions.litestar import AlembicAsyncConfig
from litestar import Litestar
from sqlalchemy import text

from example_app.app import MIGRATIONS
from litestar_bento_db import (
    ConfigError,
    DatabaseConfig,
    DatabasePlugin,
    create_async_engine_from_config,
)
from litestar_bento_db.db_lock import DatabaseLockTimeout, database_lock
from litestar_bento_db.litestar.migrations import LOCK_NAME
from litestar_bento_db.litestar.runtime import DatabaseStartupError
from tests.conftest import backend_url, require_server
from tests.proxy import free_port
from tests.servers import ROOT, Server

TABLES = ["shop_order_item", "shop_order", "shop_product", "shop_customer"]
VERSION_TABLE = "shop_alembic_version"


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite_file"])
async def test_the_lock_lets_one_holder_in_at_a_time(backend: str, tmp_path: Path) -> None:
    url = backend_url(backend, tmp_path)
    engines = [create_async_engine_from_config(DatabaseConfig(url=url)) for _ in range(3)]
    held: list[tuple[float, float]] = []

    async def hold(index: int) -> float:
        async with database_lock(engines[index], "bento-test-lock", poll=0.02) as waited:
            start = time.monotonic()
            await asyncio.sleep(0.3)
            held.append((start, time.monotonic()))
            return waited

    try:
        waits = sorted(await asyncio.gather(*(hold(i) for i in range(3))))
        spans = sorted(held)
        assert all(end <= spans[i + 1][0] for i, (_, end) in enumerate(spans[:-1])), spans
        assert waits[0] < 0.2 < waits[1] < waits[2], waits  # queued one behind the other
        async with database_lock(engines[0], "bento-test-lock"):
            with pytest.raises(DatabaseLockTimeout, match="bento-test-lock"):
                async with database_lock(engines[1], "bento-test-lock", timeout=0.3, poll=0.05):
                    pass
        # released: free again at once, for everyone
        async with database_lock(engines[2], "bento-test-lock", timeout=0.5) as waited:
            assert waited < 0.5
    finally:
        for engine in engines:
            await engine.dispose()


async def _drop_example_tables(url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=url, metrics=False))
    try:
        async with engine.begin() as connection:
            for table in [*TABLES, VERSION_TABLE]:
                await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
    finally:
        await engine.dispose()


def _start(port: int, log: Path, url: str) -> Server:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DB_URL": url, "EXAMPLE_APP_MIGRATE": "1"}
    command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "2", "--log-level", "warning", "example_app.app:app"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )
    return Server(process, port, time.monotonic(), log)


@pytest.mark.slow
@pytest.mark.driver_independent  # processes and a server lock; the lock's tests run on both
@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_three_servers_of_two_workers_migrate_once(kind: str, tmp_path: Path) -> None:
    url = require_server(kind)
    await _drop_example_tables(url)
    engine = create_async_engine_from_config(DatabaseConfig(url=url, metrics=False))
    servers: list[Server] = []
    try:
        # the test holds the migration lock while all six workers start: they all queue
        # on it, then race for it the moment it is released
        async with database_lock(engine, LOCK_NAME):
            for index in range(3):
                servers.append(_start(free_port(), tmp_path / f"server-{index}.log", url))
            await asyncio.sleep(1.0)
            while not all("waiting for database lock" in s.output() for s in servers):
                assert all(s.process.poll() is None for s in servers), _outputs(servers)
                await asyncio.sleep(0.1)
                if time.monotonic() - servers[0].started > 40:
                    pytest.fail(f"workers not waiting for the lock:\n{_outputs(servers)}")
        deadline = time.monotonic() + 60
        while True:
            logs = _outputs(servers)
            done = logs.count("database migrated from") + logs.count("database already at head")
            if done >= 6:
                break
            assert time.monotonic() < deadline, logs
            assert all(s.process.poll() is None for s in servers), logs
            await asyncio.sleep(0.1)
        assert logs.count("database migrated from nothing to 0002") == 1, logs
        assert logs.count("database already at head 0002") == 5, logs
        for server in servers:
            await asyncio.to_thread(server.wait_ready)
        async with engine.connect() as connection:
            version = await connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}"))
            assert version == "0002"
            for table in TABLES:
                assert await connection.scalar(text(f"SELECT count(*) FROM {table}")) == 0
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.process.terminate()
        for server in servers:
            try:
                server.process.wait(30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(10)
        await engine.dispose()


def _outputs(servers: list[Server]) -> str:
    return "\n".join(server.output() for server in servers)


async def test_a_failed_migration_fails_the_startup(tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "script.py.mako").write_text((MIGRATIONS / "script.py.mako").read_text())
    (scripts / "env.py").write_text("raise RuntimeError('the migration broke')\n")
    (scripts / "versions" / "0001_first.py").write_text('revision = "0001"\ndown_revision = None\n')
    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    plugin = DatabasePlugin(
        DatabaseConfig(url=url),
        migrate_on_startup=True,
        alembic_config=AlembicAsyncConfig(script_location=str(scripts)),
    )
    app = Litestar(plugins=[plugin])
    with pytest.raises((DatabaseStartupError, ExceptionGroup)) as caught:
        async with app.lifespan():
            pass
    error = caught.value
    while isinstance(error, ExceptionGroup):  # the app's task group may wrap it
        (error,) = error.exceptions
    assert isinstance(error, DatabaseStartupError)
    assert str(error) == "database migration failed: RuntimeError: the migration broke"


def test_missing_scripts_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"migrate_on_startup: no Alembic env\.py"):
        DatabasePlugin(
            DatabaseConfig(url=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"),
            migrate_on_startup=True,
            alembic_config=AlembicAsyncConfig(script_location=str(tmp_path / "nowhere")),
        )
