"""The plugin in a real uvicorn process: time to ready, load at the first 200,
SIGTERM with transactions in flight, a database that is away at startup, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from tests.conftest import PG_SCHEME, SECRET, create_password_user, require_server
from tests.proxy import TcpProxy, free_port
from tests.servers import LIVE, READY, ROOT, Server, start_server


async def _reset_orders(url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=url))
    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS bento_srv_order"))
        await connection.execute(text("CREATE TABLE bento_srv_order (id int PRIMARY KEY)"))
    await engine.dispose()


async def _order_count(url: str) -> int:
    engine = create_async_engine_from_config(DatabaseConfig(url=url))
    async with engine.connect() as connection:
        count = (await connection.execute(text("SELECT count(*) FROM bento_srv_order"))).scalar()
    await engine.dispose()
    return int(count or 0)


@pytest.fixture
async def orders_url(server_backend: str) -> str:
    """A password-protected user's URL, with an empty orders table (granted on PostgreSQL)."""
    url = await create_password_user(server_backend, "bento_srv")
    admin_url = require_server(server_backend)
    await _reset_orders(admin_url)
    if server_backend == "postgresql":
        engine = create_async_engine_from_config(DatabaseConfig(url=admin_url))
        async with engine.begin() as connection:
            await connection.execute(text("GRANT ALL ON bento_srv_order TO bento_srv"))
        await engine.dispose()
    return url


async def _burst(server: Server, first_id: int, count: int) -> list[int]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        responses = await asyncio.gather(
            *(client.post(server.url(f"/orders/{first_id + i}")) for i in range(count)),
            return_exceptions=True,
        )
    return [r.status_code if isinstance(r, httpx.Response) else -1 for r in responses]


async def test_ready_fast_and_no_failure_at_the_first_200(
    tmp_path: Path, servers: list[Server], orders_url: str
) -> None:
    server = start_server(
        tmp_path, DB_URL=orders_url, DB_POOL_PRE_PING="true", DB_WARMUP_CONNECTIONS="5",
        DB_POOL_SIZE="5", DB_MAX_OVERFLOW="10",
    )  # fmt: skip
    servers.append(server)
    time_to_ready = await asyncio.to_thread(server.wait_ready)
    statuses = await _burst(server, 0, 200)  # fired the moment readiness first said 200
    assert statuses == [201] * 200, sorted(set(statuses))
    assert await _order_count(orders_url) == 200
    assert await asyncio.to_thread(server.stop) == 0
    output = server.output()
    assert "different loop" not in output
    assert "Traceback" not in output
    assert SECRET not in output
    print(f"time to ready: {time_to_ready:.3f} s")  # shown with -s
    assert time_to_ready < 10


async def test_sigterm_lets_in_flight_transactions_commit(
    tmp_path: Path, servers: list[Server], orders_url: str
) -> None:
    server = start_server(
        tmp_path, DB_URL=orders_url, DB_POOL_SIZE="5", DB_MAX_OVERFLOW="20",
        BENTO_TEST_DRAIN_TIMEOUT="10",
    )  # fmt: skip
    servers.append(server)
    await asyncio.to_thread(server.wait_ready)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=40)) as client:
        requests = [
            asyncio.ensure_future(client.post(server.url(f"/orders/{i}?hold=1.5")))
            for i in range(20)
        ]
        while (await client.get(server.url("/_test/state"))).json()["inflight"] < 20:
            await asyncio.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        responses = await asyncio.gather(*requests)
    assert [r.status_code for r in responses] == [201] * 20
    # readiness already failed while they finished: not ready comes first, then the drain
    assert {r.json()["phase"] for r in responses} == {"draining"}
    returncode = await asyncio.to_thread(server.process.wait, 15)
    assert returncode == 0
    assert time.monotonic() - signalled < 10
    assert await _order_count(orders_url) == 20
    output = server.output()
    assert "database drain finished" in output
    assert SECRET not in output


@pytest.mark.parametrize("server_backend", ["mysql", "postgresql"])
async def test_database_away_at_startup_then_back(
    tmp_path: Path, servers: list[Server], orders_url: str, server_backend: str
) -> None:
    target = make_url(orders_url)
    default_port = 5432 if target.get_backend_name() == "postgresql" else 3306
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or default_port)
    proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        server = start_server(tmp_path, DB_URL=proxied)
        servers.append(server)
        await asyncio.to_thread(server.wait_listening)
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(server.url(LIVE))).status_code == 200
            not_ready = await client.get(server.url(READY))
            assert not_ready.status_code == 503
            assert not_ready.headers["retry-after"]
            assert not_ready.json()["status"] == "fail"
            assert (await client.post(server.url("/orders/1"))).status_code >= 500

            proxy.on()
            back = time.monotonic()
            while (await client.get(server.url(READY))).status_code != 200:
                assert time.monotonic() - back < 5, "not ready 5 s after the database came back"
                await asyncio.sleep(0.05)
            assert (await client.post(server.url("/orders/2"))).status_code == 201

            proxy.off()  # away again: readiness notices within cache_ttl + ping timeout
            gone = time.monotonic()
            while (await client.get(server.url(READY))).status_code != 503:
                assert time.monotonic() - gone < 5
                await asyncio.sleep(0.1)
            assert (await client.get(server.url(LIVE))).status_code == 200

            proxy.on()
            while (await client.get(server.url(READY))).status_code != 200:
                assert time.monotonic() - gone < 15
                await asyncio.sleep(0.1)
            assert (await client.post(server.url("/orders/3"))).status_code == 201
        assert await asyncio.to_thread(server.stop) == 0
    finally:
        proxy.close()
    assert SECRET not in server.output()


def test_fail_fast_refuses_to_start(tmp_path: Path, servers: list[Server]) -> None:
    url = f"{PG_SCHEME}://app:{SECRET}@127.0.0.1:{free_port()}/orders"
    server = start_server(tmp_path, DB_URL=url, BENTO_TEST_FAIL_FAST="1")
    servers.append(server)
    returncode = server.process.wait(30)
    output = server.output()
    assert returncode != 0
    assert "database not reachable at startup" in output
    assert "app:***@127.0.0.1" in output
    assert SECRET not in output


@pytest.mark.parametrize("server_backend", ["postgresql"])
async def test_probe_flood_costs_a_handful_of_round_trips(
    tmp_path: Path, servers: list[Server], orders_url: str
) -> None:
    server = start_server(tmp_path, DB_URL=orders_url, DB_POOL_SIZE="2", DB_MAX_OVERFLOW="0")
    servers.append(server)
    await asyncio.to_thread(server.wait_ready)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=500)) as client:
        before = (await client.get(server.url("/_test/state"))).json()["pings"]
        started = time.monotonic()
        probes = await asyncio.gather(*(client.get(server.url(READY)) for _ in range(500)))
        elapsed = time.monotonic() - started
        after = (await client.get(server.url("/_test/state"))).json()["pings"]
        # requests still get connections: probes never took the pool
        assert (await client.post(server.url("/orders/1"))).status_code == 201
    assert [p.status_code for p in probes] == [200] * 500
    # one ping per cache_ttl (1 s) at most, plus the interval it started in
    assert after - before <= int(elapsed) + 2
    assert await asyncio.to_thread(server.stop) == 0


# -- the CLI -----------------------------------------------------------------------


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "litestar", "--app", "tests.server_app:app", "bento-db", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip


def test_cli_check_and_info(orders_url: str) -> None:
    ok = _cli("check", DB_URL=orders_url)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: ")
    postgres = orders_url.startswith("postgresql")
    replica = f"postgresql+asyncpg://app:{SECRET}@127.0.0.1:5433/test"  # (PostgreSQL only)
    info = _cli("info", DB_URL=orders_url, DB_READ_REPLICA_URLS=replica if postgres else "")
    assert info.returncode == 0, info.stderr
    details = json.loads(info.stdout)
    assert details["reachable"] is True
    assert ":***@" in details["url"]
    if postgres:
        assert details["config"]["read_replica_urls"] == [replica.replace(SECRET, "***")]
    down = _cli("check", "--timeout", "2", DB_URL=f"{PG_SCHEME}://app:{SECRET}@127.0.0.1:1/x")
    assert down.returncode == 1
    assert "error: database not reachable within 2 s" in down.stderr
    for result in (ok, info, down):
        assert SECRET not in result.stdout + result.stderr


def test_advanced_alchemy_migration_cli_still_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "litestar", "--app", "tests.server_app:app", "database", "--help"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DB_URL": "sqlite:///:memory:"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "upgrade" in result.stdout
