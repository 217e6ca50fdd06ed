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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from tests.conftest import create_password_user, require_server
from tests.db_control import restored, server_for
from tests.proxy import TcpProxy
from tests.servers import READY, Server, start_server

pytestmark = pytest.mark.slow

USER = "bento_chaos"
WORKERS = 16
OUTAGE = 3.0  # seconds the database is away in the outage and stall faults
POOL_TIMEOUT, COMMAND_TIMEOUT, CONNECT_TIMEOUT = 2.0, 3.0, 2.0
RETRY_ATTEMPTS = 3  # tests/chaos_app.py
SLACK = 0.5  # scheduling on a loaded 2-core machine, and MySQL's read-timeout margin
SETTINGS = {
    "DB_POOL_SIZE": "8",
    "DB_MAX_OVERFLOW": "4",
    "DB_POOL_TIMEOUT": str(POOL_TIMEOUT),
    "DB_COMMAND_TIMEOUT": str(COMMAND_TIMEOUT),
    "DB_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
    "DB_WARMUP_CONNECTIONS": "4",
    "DB_APPLICATION_NAME": "bento-chaos",
}


@dataclass
class Call:
    key: str
    kind: str  # "direct" (one attempt) or "unit" (retried)
    status: int  # -1: no HTTP answer
    retry_after: str | None
    started: float
    ended: float


@dataclass
class Report:
    """The figures of one run (the README's table)."""

    database: str
    fault: str
    requests: int = 0
    ok: int = 0
    unavailable: int = 0
    errors: int = 0
    other: int = 0
    lost: int = 0
    duplicated: int = 0
    recovery_s: float | None = None
    longest_s: float = 0.0
    """The longest request that made one attempt (the request's own session)."""
    longest_retried_s: float = 0.0
    """The longest retried unit of work (up to ``max_attempts`` attempts)."""
    readiness_failed: bool = False
    statuses: dict[str, int] = field(default_factory=dict)


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


class Load:
    """``WORKERS`` clients writing unique keys as fast as the app answers."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.calls: list[Call] = []
        self.readiness: list[tuple[float, int]] = []
        self._running = True

    async def _worker(self, client: httpx.AsyncClient, worker: int) -> None:
        n = 0
        while self._running:
            n += 1
            key, kind = f"{worker}-{n}", "direct" if n % 2 else "unit"
            path = f"/{kind}/{key}"
            started = time.monotonic()
            try:
                response = await client.post(self.server.url(path))
                status, retry_after = response.status_code, response.headers.get("retry-after")
            except httpx.HTTPError:
                status, retry_after = -1, None
            self.calls.append(Call(key, kind, status, retry_after, started, time.monotonic()))

    async def _probe(self, client: httpx.AsyncClient) -> None:
        while self._running:
            try:
                response = await client.get(self.server.url(READY))
                self.readiness.append((time.monotonic(), response.status_code))
            except httpx.HTTPError:
                self.readiness.append((time.monotonic(), -1))
            await asyncio.sleep(0.1)

    async def run_until(self, done: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=WORKERS + 2)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            tasks = [asyncio.ensure_future(self._worker(client, w)) for w in range(WORKERS)]
            tasks.append(asyncio.ensure_future(self._probe(client)))
            await done.wait()
            self._running = False
            await asyncio.gather(*tasks)


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


def _report(
    kind: str, fault: str, load: Load, stored: Counter[str], broke: float, back: float
) -> Report:
    calls = load.calls
    statuses = Counter(str(call.status) for call in calls)
    acknowledged = {call.key for call in calls if 200 <= call.status < 300}
    first_ok = min(
        (c.ended for c in calls if 200 <= c.status < 300 and c.ended >= back), default=None
    )
    return Report(
        database=kind,
        fault=fault,
        requests=len(calls),
        ok=sum(200 <= c.status < 300 for c in calls),
        unavailable=statuses["503"],
        errors=statuses["500"],
        other=sum(n for s, n in statuses.items() if s not in ("201", "503", "500")),
        lost=len(acknowledged - set(stored)),
        duplicated=sum(1 for n in stored.values() if n > 1),
        recovery_s=round(first_ok - back, 3) if first_ok is not None else None,
        longest_s=round(max(c.ended - c.started for c in calls if c.kind == "direct"), 3),
        longest_retried_s=round(max(c.ended - c.started for c in calls if c.kind == "unit"), 3),
        readiness_failed=any(broke <= t <= back and s == 503 for t, s in load.readiness),
        statuses=dict(statuses),
    )


@pytest.mark.parametrize("fault", ["kill", "restart", "outage", "stall"])
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
            server = start_server(
                tmp_path,
                "tests.chaos_app:app",
                DB_URL=url.render_as_string(hide_password=False),
                **SETTINGS,
            )
            servers.append(server)
            await asyncio.to_thread(server.wait_ready)
            load, done = Load(server), asyncio.Event()
            running = asyncio.ensure_future(load.run_until(done))
            await asyncio.sleep(1.5)
            broke, back = await _inject(fault, kind, proxy)
            await asyncio.sleep(3.0)
            done.set()
            await running
        finally:
            if proxy is not None:
                proxy.close()
        stored = await _stored(kind)
    report = _report(kind, fault, load, stored, broke, back)
    if path := os.environ.get("BENTO_CHAOS_REPORT"):
        with Path(path).open("a") as sink:  # noqa: ASYNC230 - one line, after the run
            sink.write(json.dumps(asdict(report)) + "\n")

    assert report.ok > 100, report
    assert report.lost == 0, report
    assert report.duplicated == 0, report
    assert report.errors == 0, report
    assert report.other == 0, report
    assert all(c.retry_after for c in load.calls if c.status == 503), report
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
