"""Failover and switchover of a real 3-node Patroni cluster under write load.

The app (tests/chaos_app.py: 16 writers, half through the request's session, half a
retried unit of work) reaches the primary through HAProxy (127.0.0.1:5440, which routes
to the node answering Patroni's ``/primary``) or through a multi-host URL of the three
nodes with ``target_session_attrs=read-write``. The primary then moves: a switchover
(Patroni's ``POST /switchover``) or a hard failover (the leader's Patroni and postmaster
killed with SIGKILL; Patroni promotes the synchronous standby once the leader key
expires, about 20 s later). For each: no 500, no acknowledged write lost, none written
twice, every 503 with ``Retry-After``, the first acknowledged write within 1 s of the
new primary being reachable through the app's URL, readiness failing only while no
writable primary is reachable. The killed node is brought back (ensure-patroni.sh)
whatever happens.

Set ``BENTO_FAILOVER_REPORT`` to a file path to get one JSON line of figures per run.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest
from sqlalchemy import text

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from tests import patroni
from tests.conftest import PG_SCHEME
from tests.load import Load, Report, assert_no_harm, load_around, report_of, start_app
from tests.servers import Server

pytestmark = pytest.mark.slow

#: the primary through HAProxy, and the three nodes in one multi-host URL
URLS = {
    "haproxy": f"{PG_SCHEME}://postgres@{patroni.HOST}:{patroni.HAPROXY_PRIMARY}/test",
    "multihost": f"{PG_SCHEME}://postgres@"
    + ",".join(f"{patroni.HOST}:{patroni.pg_port(node)}" for node in patroni.NODES)
    + "/test?target_session_attrs=read-write",
}
#: seconds from the new primary being reachable through the URL to the first 2xx write
RECOVERY = 1.0


async def _admin(statements: list[str]) -> Counter[str]:
    """Run ``statements`` on the primary (through HAProxy); the keys stored, counted."""
    engine = create_async_engine_from_config(DatabaseConfig(url=URLS["haproxy"]))
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
            rows = await connection.execute(text("SELECT k FROM bento_chaos"))
            return Counter(str(row[0]) for row in rows)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("event", ["switchover", "failover"])
# through HAProxy the driver meets a plain TCP endpoint that drops its connections (as
# in the chaos tests, which run on both drivers): asyncpg's pass has it; the multi-host
# URL, where the driver itself picks the node, runs on both
@pytest.mark.parametrize(
    "mode", [pytest.param("haproxy", marks=pytest.mark.driver_independent), "multihost"]
)
async def test_writes_survive_the_primary_moving(
    mode: str, event: str, tmp_path: Path, servers: list[Server]
) -> None:
    await asyncio.to_thread(patroni.require_patroni)
    old, candidate = patroni.leader(), patroni.sync_standby()
    assert old is not None, patroni.cluster()
    assert candidate is not None, patroni.cluster()
    await _admin(
        [
            "DROP TABLE IF EXISTS bento_chaos",
            "CREATE TABLE bento_chaos (id serial PRIMARY KEY, k varchar(40) NOT NULL, "
            "via varchar(8))",
        ]
    )
    # the new primary is reachable through HAProxy, or as one of the other nodes
    ports = (
        [patroni.HAPROXY_PRIMARY]
        if mode == "haproxy"
        else [patroni.pg_port(node) for node in patroni.NODES if node != old]
    )
    try:
        server = await start_app(tmp_path, servers, URLS[mode])
        load, broke, back = await load_around(
            server, lambda: patroni.move_primary(event, old, candidate, ports)
        )
        stored = await _admin([])
    finally:
        await asyncio.to_thread(patroni.ensure)  # the killed node rejoins as a replica
    report = report_of(f"patroni/{mode}", event, load, stored, broke, back)
    if path := os.environ.get("BENTO_FAILOVER_REPORT"):
        figures = {**asdict(report), "outage_s": round(back - broke, 3)}
        with Path(path).open("a") as sink:  # noqa: ASYNC230 - one line, after the run
            sink.write(json.dumps(figures) + "\n")
    _check(report, load, broke, back)


def _check(report: Report, load: Load, broke: float, back: float) -> None:
    assert_no_harm(report, load)
    assert report.recovery_s is not None, report
    assert report.recovery_s <= RECOVERY, report
    # readiness fails only for probes in flight while no writable primary is reachable (or
    # sent a moment after: the probe's cache and the pool's reconnection)
    outside = [
        (round(sent - broke, 3), round(answered - broke, 3), load.readiness_output.get(sent))
        for sent, answered, status in load.readiness
        if status != 200 and not (answered >= broke and sent <= back + RECOVERY)
    ]
    assert outside == [], (report, outside, round(back - broke, 3))
