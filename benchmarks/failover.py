"""Failover side by side: the hand-written app and ours, on the same Patroni cluster.

Each app of ``benchmarks/apps`` (the baseline: hand-written Litestar + SQLAlchemy with
``pool_pre_ping``; ours: ``DatabasePlugin`` with its defaults) serves ``POST /orders``
to ``--writers`` clients writing unique keys while the primary moves, in each way of
connecting:

- ``haproxy``: 127.0.0.1:5440, HAProxy routing to the node that answers ``/primary``
  (and cutting the sessions of a node marked down);
- ``multihost``: the three nodes in one URL with ``target_session_attrs=read-write``;
- ``dns`` (switchover only): a name that follows the primary late, as DNS does: a TCP
  proxy that keeps pointing at the old primary, now a standby, for ``--dns-delay``
  seconds after the new one is writable, then moves (old connections are kept).

Events: ``switchover`` (Patroni's ``POST /switchover``) and ``failover`` (the leader's
Patroni and postmaster killed with SIGKILL). Reported per run: answers by status, writes
acknowledged but lost or stored twice, the outage (event to the new primary reachable
through the URL), and how long writes failed: from the event to the first acknowledged
write after the primary was reachable again, and any failed write later than 5 s after
that ("never" when writes still failed at the end of the run).

    .venv/bin/python -m benchmarks.failover [--driver asyncpg] [--writers 16]

Needs scripts/ensure-patroni.sh (run first); about 4 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.apps.common import Order, create_tables
from benchmarks.harness import free_port, start, stop, wait_for
from tests import patroni
from tests.proxy import TcpProxy

APPS = {"baseline": "benchmarks.apps.baseline:app", "ours": "benchmarks.apps.ours:app"}
RUN_AFTER = 8.0  # seconds of load after the primary is reachable again
LATE = 5.0  # a failed write later than this after that counts as "still failing"


@dataclass
class Figures:
    app: str
    mode: str
    event: str
    requests: int
    ok: int
    unavailable: int
    errors: int
    other: int
    lost: int
    duplicated: int
    outage_s: float
    writes_back_s: float | None
    """From the primary reachable through the URL to the first acknowledged write."""
    failing_s: float | None
    """From the event to the first acknowledged write after the primary was reachable."""
    late_failures: int
    """Failed writes later than ``LATE`` s after the primary was reachable."""
    timeline: dict[int, list[int]]
    """Per second from the event (negative: before it): [acknowledged, failed] writes."""


class Writers:
    def __init__(self, base: str, writers: int) -> None:
        self.base = base
        self.writers = writers
        self.calls: list[tuple[int, int, float]] = []  # key, status, ended
        self.running = True
        self._keys = itertools.count(1)

    async def _one(self, client: httpx.AsyncClient) -> None:
        while self.running:
            key = next(self._keys)
            try:
                response = await client.post(
                    f"{self.base}/orders", json={"item_id": key, "quantity": 1}
                )
                status = response.status_code
            except httpx.HTTPError:
                status = -1
            self.calls.append((key, status, time.monotonic()))

    async def run(self, done: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=self.writers)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            tasks = [asyncio.ensure_future(self._one(client)) for _ in range(self.writers)]
            await done.wait()
            self.running = False
            await asyncio.gather(*tasks)


def _admin_url(driver: str) -> str:
    return f"postgresql+{driver}://postgres@{patroni.HOST}:{patroni.HAPROXY_PRIMARY}/test"


async def _tables(driver: str) -> None:
    engine = create_async_engine(_admin_url(driver))
    try:
        await create_tables(engine)
    finally:
        await engine.dispose()


async def _stored(driver: str) -> Counter[int]:
    engine = create_async_engine(_admin_url(driver))
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(Order.item_id))
            return Counter(int(row[0]) for row in rows)
    finally:
        await engine.dispose()


async def one_run(
    app: str, mode: str, event: str, driver: str, writers: int, dns_delay: float
) -> Figures:
    await asyncio.to_thread(patroni.ensure)
    old, candidate = patroni.leader(), patroni.sync_standby()
    if old is None or candidate is None:
        raise RuntimeError(f"no leader or no synchronous standby: {patroni.cluster()}")
    await _tables(driver)
    proxy = None
    scheme = f"postgresql+{driver}"
    if mode == "haproxy":
        url = _admin_url(driver)
        ports = [patroni.HAPROXY_PRIMARY]
    elif mode == "multihost":
        # SQLAlchemy's form: the hand-written app's create_async_engine() parses it too
        hosts = "&".join(f"host={patroni.HOST}:{patroni.pg_port(node)}" for node in patroni.NODES)
        url = f"{scheme}://postgres@/test?{hosts}&target_session_attrs=read-write"
        ports = [patroni.pg_port(node) for node in patroni.NODES if node != old]
    else:
        proxy = TcpProxy(patroni.HOST, patroni.pg_port(old))
        proxy.on()
        url = f"{scheme}://postgres@{patroni.HOST}:{proxy.port}/test"
        ports = [patroni.pg_port(candidate)]
    port = free_port()
    process = start(APPS[app], port, url)
    try:
        await asyncio.to_thread(wait_for, port, "/items/1", 30, process)
        load, done = Writers(f"http://127.0.0.1:{port}", writers), asyncio.Event()
        running = asyncio.ensure_future(load.run(done))
        try:
            await asyncio.sleep(1.5)
            broke, back = await patroni.move_primary(event, old, candidate, ports)
            if proxy is not None:  # the name follows the primary late
                await asyncio.sleep(dns_delay)
                proxy.target = (patroni.HOST, patroni.pg_port(candidate))
                back = time.monotonic()
            await asyncio.sleep(RUN_AFTER)
        finally:
            done.set()
            await running
    finally:
        stop(process)
        if proxy is not None:
            proxy.close()
        await asyncio.to_thread(patroni.ensure)
    stored = await _stored(driver)
    calls = load.calls
    statuses = Counter(status for _, status, _ in calls)
    acknowledged = {key for key, status, _ in calls if 200 <= status < 300}
    first_back = min((t for _, s, t in calls if 200 <= s < 300 and t >= back), default=None)
    return Figures(
        app=app,
        mode=mode,
        event=event,
        requests=len(calls),
        ok=sum(n for s, n in statuses.items() if 200 <= s < 300),
        unavailable=statuses[503],
        errors=statuses[500],
        other=sum(n for s, n in statuses.items() if s not in (201, 500, 503)),
        lost=len(acknowledged - set(stored)),
        duplicated=sum(1 for n in stored.values() if n > 1),
        outage_s=round(back - broke, 2),
        writes_back_s=round(first_back - back, 3) if first_back is not None else None,
        failing_s=round(first_back - broke, 2) if first_back is not None else None,
        late_failures=sum(1 for _, s, t in calls if s != 201 and t > back + LATE),
        timeline=_timeline(calls, broke),
    )


def _timeline(calls: list[tuple[int, int, float]], broke: float) -> dict[int, list[int]]:
    seconds: dict[int, list[int]] = {}
    for _, status, ended in calls:
        counts = seconds.setdefault(int((ended - broke) // 1), [0, 0])
        counts[0 if 200 <= status < 300 else 1] += 1
    return dict(sorted(seconds.items()))


async def main(args: argparse.Namespace) -> None:
    runs = [
        (mode, event)
        for mode in args.modes
        for event in args.events
        if not (mode == "dns" and event == "failover")
    ]
    results: list[Figures] = []
    for mode, event in runs:
        for app in args.apps:
            figures = await one_run(app, mode, event, args.driver, args.writers, args.dns_delay)
            print(json.dumps({**asdict(figures), "timeline": None}), flush=True)
            results.append(figures)
    if args.output:
        text = json.dumps([asdict(r) for r in results], indent=1)
        await asyncio.to_thread(Path(args.output).write_text, text)
    print(f"\n{args.writers} writers, {args.driver}; a write is POST /orders (one INSERT)\n")
    print(
        "| connection | event | app | 2xx | 503 | 500 | other | lost | doubled | "
        "outage (s) | writes back after (s) | later failures |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        back = "never" if r.writes_back_s is None else f"{r.writes_back_s:.3f}"
        print(
            f"| {r.mode} | {r.event} | {r.app} | {r.ok} | {r.unavailable} | {r.errors} | "
            f"{r.other} | {r.lost} | {r.duplicated} | {r.outage_s:.1f} | {back} | "
            f"{r.late_failures} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--driver", default="asyncpg", choices=["asyncpg", "psycopg"])
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--apps", nargs="+", default=list(APPS), choices=list(APPS))
    parser.add_argument(
        "--modes", nargs="+", default=["haproxy", "multihost", "dns"],
        choices=["haproxy", "multihost", "dns"],
    )  # fmt: skip
    parser.add_argument(
        "--events", nargs="+", default=["switchover", "failover"],
        choices=["switchover", "failover"],
    )  # fmt: skip
    parser.add_argument("--dns-delay", type=float, default=3.0)
    parser.add_argument("--output", help="write the figures as JSON to this file")
    asyncio.run(main(parser.parse_args()))
