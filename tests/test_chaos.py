"""Chaos: a real uvicorn app under write load while its database is broken for real.

Faults: every app backend killed; a fast server restart; the server stopped for a few
seconds and started again; a network stall (a proxy that keeps the connections open
but forwards nothing). For each, on PostgreSQL and MariaDB: every acknowledged write is
stored, none twice, no 500, every 503 carries ``Retry-After``, readiness fails while
the database is away, service comes back within 2 s of the database, and no request
waits longer than the pool and statement time limits allow.

Set ``BENTO_CHAOS_REPORT`` to a file path to get one JSON line of figures per run.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from tests.conftest import create_password_user, require_server
from tests.db_control import restored, server_for
from tests.load import (
    COMMAND_TIMEOUT,
    POOL_TIMEOUT,
    RETRY_ATTEMPTS,
    SLACK,
    assert_no_harm,
    load_around,
    report_of,
    start_app,
)
from tests.proxy import TcpProxy
from tests.servers import Server

pytestmark = pytest.mark.slow

USER = "bento_chaos"
OUTAGE = 3.0  # seconds the database is away in the outage and stall faults


async def _prepare(kind: str) -> str:
    """An empty table and a dedicated user (so that its connections can be killed)."""
    url = await create_password_user(kind, USER)
    admin = create_async_engine_from_config(DatabaseConfig(url=require_server(kind)))
    try:
        async with admin.begin() as connection:
            await connection.execute(text("DROP TABLE IF EXISTS bento_chaos"))
            key = (
                "id serial PRIMARY KEY"
                if kind == "postgresql"
                else "id int AUTO_INCREMENT PRIMARY KEY"
            )
            await connection.execute(
                text(f"CREATE TABLE bento_chaos ({key}, k varchar(40) NOT NULL, via varchar(8))")
            )
            if kind == "postgresql":
                await connection.execute(text(f"GRANT ALL ON bento_chaos TO {USER}"))
                await connection.execute(
                    text(f"GRANT ALL ON SEQUENCE bento_chaos_id_seq TO {USER}")
                )
    finally:
        await admin.dispose()
    return url


async def _kill_app_connections(kind: str) -> int:
    admin = create_async_engine_from_config(DatabaseConfig(url=require_server(kind)))
    try:
        async with admin.connect() as connection:
            if kind == "postgresql":
                kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                result = await connection.execute(text(f"{kill} WHERE usename = :u"), {"u": USER})
                return int(result.scalar_one())
            rows = await connection.execute(
                text("SELECT id FROM information_schema.processlist WHERE user = :u"), {"u": USER}
            )
            killed = 0
            for (connection_id,) in rows.all():
                try:
                    await connection.execute(text(f"KILL {int(connection_id)}"))
                    killed += 1
                except DBAPIError:  # 1094: it ended between the listing and the KILL
                    pass
            return killed
    finally:
        await admin.dispose()


async def _stored(kind: str) -> Counter[str]:
    admin = create_async_engine_from_config(DatabaseConfig(url=require_server(kind)))
    try:
        async with admin.connect() as connection:
            rows = await connection.execute(text("SELECT k FROM bento_chaos"))
            return Counter(str(row[0]) for row in rows)
    finally:
        await admin.dispose()


async def _inject(fault: str, kind: str, proxy: TcpProxy | None) -> tuple[float, float]:
    """Break the database; return when it broke and when it answered again."""
    server = server_for(kind)
    broke = time.monotonic()
    if fault == "kill":
        assert await _kill_app_connections(kind) > 0
    elif fault == "restart":
        await asyncio.to_thread(server.restart)
    elif fault == "outage":
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(OUTAGE)
        await asyncio.to_thread(server.start)
    else:
        assert proxy is not None
        proxy.stall()
        await asyncio.sleep(OUTAGE)
        proxy.on()
    return broke, time.monotonic()


# killed connections and a restarted server also run on the lowest versions (SQLAlchemy
# 2.0's pool under real faults); the outage and the stall on the newest only
@pytest.mark.parametrize(
    "fault",
    [
        pytest.param("kill", marks=pytest.mark.floors),
        pytest.param("restart", marks=pytest.mark.floors),
        "outage",
        "stall",
    ],
)
@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_writes_survive_real_faults(
    kind: str, fault: str, tmp_path: Path, servers: list[Server]
) -> None:
    require_server(kind)
    with restored():
        url = make_url(await _prepare(kind))
        proxy = None
        if fault == "stall":
            proxy = TcpProxy(
                url.host or "127.0.0.1", url.port or (5432 if kind == "postgresql" else 3306)
            )
            proxy.on()
            url = url.set(port=proxy.port)
        try:
            server = await start_app(tmp_path, servers, url.render_as_string(hide_password=False))
            load, broke, back = await load_around(server, lambda: _inject(fault, kind, proxy))
        finally:
            if proxy is not None:
                proxy.close()
        stored = await _stored(kind)
    report = report_of(kind, fault, load, stored, broke, back)
    if path := os.environ.get("BENTO_CHAOS_REPORT"):
        with Path(path).open("a") as sink:  # noqa: ASYNC230 - one line, after the run
            sink.write(json.dumps(asdict(report)) + "\n")

    assert_no_harm(report, load)
    if fault in ("outage", "stall"):  # away longer than the readiness ping's timeout
        assert report.readiness_failed, report
    if fault in ("kill", "restart"):  # a stale pooled connection never fails a request
        late = [c for c in load.calls if c.started > back + 0.05 and c.status != 201]
        assert late == [], (report, late[:5])
    assert report.recovery_s is not None, report
    assert report.recovery_s <= 2.0, report
    # one attempt waits at most for a connection and one statement (MySQL's client-side
    # read timeout sits just above the server's limit); a retried unit of work, up to
    # RETRY_ATTEMPTS times that
    assert report.longest_s <= POOL_TIMEOUT + COMMAND_TIMEOUT + SLACK, report
    assert report.longest_retried_s <= RETRY_ATTEMPTS * (POOL_TIMEOUT + COMMAND_TIMEOUT) + SLACK
