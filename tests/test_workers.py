"""Multi-worker serving: uvicorn and granian with N worker processes.

Each worker creates its own engine in its own event loop and warms it up (the server
sees workers x warm-up connections), and on SIGTERM every worker lets its requests
finish, commits them, drains and exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from tests.conftest import require_server
from tests.proxy import free_port
from tests.servers import ROOT

# worker processes, each with its engine, drained on SIGTERM: about the server and the
# plugin's lifespan, not the PostgreSQL driver (asyncpg's pass has it)
pytestmark = [pytest.mark.slow, pytest.mark.driver_independent]

WORKERS = 3
WARMUP = 2
APP = "tests.server_app:app"


def _command(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
        return [*command, "--workers", str(WORKERS), "--log-level", "warning", APP]
    command = [str(Path(sys.executable).with_name("granian")), "--interface", "asgi"]
    options = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS)]
    # a granian worker sometimes hangs in its runtime teardown after the app's shutdown
    # (emmett-framework/granian#875; once in CI on 2.3.0): the kill timeout ends it, as
    # docs/scale-out.md's production command does. The drain below is checked from each worker's
    # own record, written before that teardown
    options += ["--workers-kill-timeout", "10"]
    return [*command, *options, "--log-level", "warning", APP]


async def _scalar(url: str, query: str, **params: object) -> int:
    engine = create_async_engine_from_config(DatabaseConfig(url=url, metrics=False))
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(text(query), params)).scalar_one())
    finally:
        await engine.dispose()


async def _server_connections(url: str, name: str) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"
    return await _scalar(url, query, n=name)


async def _reset(url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=url, metrics=False))
    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS bento_srv_order"))
        await connection.execute(text("CREATE TABLE bento_srv_order (id int PRIMARY KEY)"))
    await engine.dispose()


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
async def test_each_worker_has_its_engine_and_drains_on_sigterm(
    server: str, tmp_path: Path
) -> None:
    url = require_server("postgresql")
    await _reset(url)
    name = f"bento-workers-{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DB_URL": url,
        "DB_APPLICATION_NAME": name,
        "DB_POOL_SIZE": "4",
        "DB_MAX_OVERFLOW": "4",
        "DB_WARMUP_CONNECTIONS": str(WARMUP),
    }
    log = tmp_path / "server.log"
    shutdowns = tmp_path / "shutdowns.jsonl"  # each worker's drain result (tests/server_app.py)
    env["BENTO_TEST_SHUTDOWN_LOG"] = str(shutdowns)
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
            _command(server, port), env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        # a connection per request: the kernel hands each to any worker
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:
            pids: set[int] = set()
            deadline = time.monotonic() + 30
            while len(pids) < WORKERS:  # every worker answers ready
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"workers seen: {pids}\n{log.read_text()}"
                try:
                    if (
                        await client.get(f"{base}/api/v1/common/health/readiness")
                    ).status_code == 200:
                        pids.add((await client.get(f"{base}/_test/state")).json()["pid"])
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            # each worker opened its own warm-up connections, in its own loop
            for _ in range(50):
                connections = await _server_connections(url, name)
                if connections == WORKERS * WARMUP:
                    break
                await asyncio.sleep(0.1)
            assert connections == WORKERS * WARMUP

            # staggered, one new connection each: a burst of 24 connects at once may be
            # accepted by a single worker (granian 2.3 does), which would test only it
            orders = []
            for i in range(24):
                orders.append(asyncio.ensure_future(client.post(f"{base}/orders/{i}?hold=1.5")))
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*orders)
        assert [r.status_code for r in responses] == [201] * 24, log.read_text()
        assert len({r.json()["pid"] for r in responses}) > 1  # spread over the workers
        assert all(r.json()["phase"] == "draining" for r in responses)
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 30 s after SIGTERM\n{log.read_text()}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert await _scalar(url, "SELECT count(*) FROM bento_srv_order") == 24
    assert await _server_connections(url, name) == 0  # every worker drained and closed
    # every worker drained, each its own pool. Not read from the log: a worker killed by
    # the SIGTERM its server re-raises after shutdown may lose its last queued log lines
    results = [json.loads(line) for line in shutdowns.read_text().splitlines()]
    assert len({r["pid"] for r in results}) == WORKERS, results
    assert all(r["drain"]["success"] and r["drain"]["connections_at_end"] == 0 for r in results)
