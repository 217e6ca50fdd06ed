"""The pytest plugin as users run it: ``examples/testing`` (a user's own test module,
its own pytest root) against each database, in a pytest process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from litestar_bento_db.resilience import DatabaseErrorClassifier, ErrorCategory
from litestar_bento_db.testing import DatabaseFaults
from tests.conftest import backend_url, require_server
from tests.servers import ROOT

EXAMPLE = ROOT / "examples" / "testing"
TABLES = ["shop_customer", "shop_product", "shop_order", "shop_order_item"]
#: the server's own code for a statement past its time limit
TIMED_OUT = {"postgresql": "57014", "mysql": 1969}


def _run(url: str, *, by_env: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("DB_URL", "DATABASE_URL", "TEST_DB_URL"):
        env.pop(name, None)
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"]
    if by_env:
        env["TEST_DB_URL"] = url
    else:
        args += ["--db-url", url]
    return subprocess.run(
        args, cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def _rows(url: str) -> dict[str, int]:
    engine = create_async_engine_from_config(DatabaseConfig(url=url, metrics=False))
    try:
        async with engine.connect() as connection:
            return {
                table: int(
                    (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                )
                for table in TABLES
            }
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite_file"])
async def test_a_users_test_module_passes_and_leaves_nothing(backend: str, tmp_path: Path) -> None:
    url = backend_url(backend, tmp_path)
    result = _run(url, by_env=backend == "sqlite_file")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    if backend == "sqlite_file":
        assert "4 passed, 2 skipped" in output, output
        assert "SQLite has no server session" not in output  # the reason names the dialect
        assert "sqlite has no server session" in output
    else:
        assert "6 passed" in output, output
    # every test committed (requests, units of work, db_session.commit()): none of it stayed
    assert await _rows(url) == dict.fromkeys(TABLES, 0)


def test_the_plugin_is_not_loaded_unless_asked() -> None:
    """No ``pytest11`` entry point: projects that install us get no fixtures by surprise."""
    plugins = {entry.value for entry in entry_points(group="pytest11")}
    assert not any(value.startswith("litestar_bento_db") for value in plugins), plugins


async def test_the_faults_are_the_servers_own(server_backend: str, server_url: str) -> None:
    """What ``db_faults`` provokes is classified as the real failure it is."""
    engine = create_async_engine_from_config(DatabaseConfig(url=server_url, metrics=False))
    try:
        async with engine.connect() as connection:
            await connection.begin()
            faults = DatabaseFaults(engine, connection)
            faults.time_out_next_statement()
            with pytest.raises(DBAPIError) as timed_out:
                await connection.execute(text("SELECT 1"))
            assert DatabaseErrorClassifier.classify(timed_out.value) is ErrorCategory.TIMEOUT
            assert DatabaseErrorClassifier.error_code(timed_out.value) == TIMED_OUT[server_backend]
            await connection.rollback()
            # once only: the next statement runs
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
            await faults.kill_connection()
            with pytest.raises(DBAPIError) as lost:
                await connection.execute(text("SELECT 1"))
            assert DatabaseErrorClassifier.classify(lost.value) is ErrorCategory.CONNECTION
    finally:
        await engine.dispose()


def _is_local_postgres(pid: int) -> bool:
    process = Path(f"/proc/{pid}/cmdline")
    return process.exists() and b"postgres" in process.read_bytes()


async def test_kill_connection_waits_for_a_backend_slow_to_exit() -> None:
    """The backend still there at the first look (stopped here for 0.5 s, as a busy machine
    delays it) is seen gone once it exits: each look reads the server afresh."""
    url = require_server("postgresql")
    engine = create_async_engine_from_config(DatabaseConfig(url=url, metrics=False))
    try:
        async with engine.connect() as connection:
            await connection.begin()
            pid = int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            if not _is_local_postgres(pid):
                pytest.skip("the PostgreSQL server does not run on this machine")
            try:
                os.kill(pid, signal.SIGSTOP)
            except PermissionError:
                pytest.skip("the PostgreSQL server's processes are not this user's to stop")
            resume = asyncio.get_running_loop().call_later(0.5, os.kill, pid, signal.SIGCONT)
            try:
                started = time.monotonic()
                await DatabaseFaults(engine, connection).kill_connection()
                assert time.monotonic() - started >= 0.4  # it did wait for the exit
            finally:
                resume.cancel()
                with contextlib.suppress(ProcessLookupError):  # exited: resumed by then
                    os.kill(pid, signal.SIGCONT)
            with pytest.raises(DBAPIError):
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
