"""Write load on a test app while its database is broken: the chaos and failover tests.

``WORKERS`` clients write unique keys to tests/chaos_app.py as fast as it answers, half
through the request's session, half through a retried unit of work, while a probe reads
readiness every 0.1 s; :func:`load_around` runs a fault in the middle, and
:func:`report_of` sums up what the clients saw against what the database stored.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.servers import READY, Server, start_server

WORKERS = 16

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


class Load:
    """``WORKERS`` clients writing unique keys as fast as the app answers."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.calls: list[Call] = []
        self.readiness: list[tuple[float, float, int]] = []
        """(when the probe was sent, when it was answered, its status; -1: no answer)."""
        self.readiness_output: dict[float, str] = {}
        """What a failed probe answered, by when it was sent."""
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
            sent = time.monotonic()
            try:
                response = await client.get(self.server.url(READY))
                self.readiness.append((sent, time.monotonic(), response.status_code))
                if response.status_code != 200:
                    self.readiness_output[sent] = response.text
            except httpx.HTTPError:
                self.readiness.append((sent, time.monotonic(), -1))
            await asyncio.sleep(0.1)

    async def run_until(self, done: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=WORKERS + 2)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            tasks = [asyncio.ensure_future(self._worker(client, w)) for w in range(WORKERS)]
            tasks.append(asyncio.ensure_future(self._probe(client)))
            await done.wait()
            self._running = False
            await asyncio.gather(*tasks)


def report_of(
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
        readiness_failed=any(
            sent <= back and answered >= broke and s == 503 for sent, answered, s in load.readiness
        ),
        statuses=dict(statuses),
    )


async def start_app(tmp_path: Path, servers: list[Server], url: str) -> Server:
    """tests/chaos_app.py under uvicorn on ``url`` with :data:`SETTINGS`, once ready."""
    server = start_server(tmp_path, "tests.chaos_app:app", DB_URL=url, **SETTINGS)
    servers.append(server)
    await asyncio.to_thread(server.wait_ready)
    return server


async def load_around(
    server: Server,
    fault: Callable[[], Awaitable[tuple[float, float]]],
    *,
    before: float = 1.5,
    after: float = 3.0,
) -> tuple[Load, float, float]:
    """Load ``server``; after ``before`` s run ``fault`` (it returns when the database
    broke and when it was back), then ``after`` s more. Returns the load, broke, back."""
    load, done = Load(server), asyncio.Event()
    running = asyncio.ensure_future(load.run_until(done))
    try:
        await asyncio.sleep(before)
        broke, back = await fault()
        await asyncio.sleep(after)
    finally:
        done.set()
        await running
    return load, broke, back


def assert_no_harm(report: Report, load: Load) -> None:
    """Enough writes; none answered 500 or anything unexpected, lost or stored twice; every
    503 with ``Retry-After``."""
    assert report.ok > 100, report
    assert report.errors == 0, report
    assert report.other == 0, report
    assert report.lost == 0, report
    assert report.duplicated == 0, report
    assert all(c.retry_after for c in load.calls if c.status == 503), report
