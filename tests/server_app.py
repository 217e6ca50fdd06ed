"""The app the server tests run under uvicorn; settings from DB_* and BENTO_TEST_*."""

from __future__ import annotations

import asyncio
import json
import os

from litestar import Litestar, get, post
from litestar.params import FromPath, FromQuery
from sqlalchemy import text

from litestar_bento_db import DatabasePlugin, DbSession, HealthConfig, PluginConfig

inflight = 0

plugin = DatabasePlugin(
    PluginConfig(
        health=HealthConfig(path="/api/v1/common/health", cache_ttl=1.0),
        fail_fast=os.environ.get("BENTO_TEST_FAIL_FAST") == "1",
        startup_retry_max_delay=0.5,
        drain_timeout=float(os.environ.get("BENTO_TEST_DRAIN_TIMEOUT", "30")),
    )
)


@post("/orders/{order_id:int}")
async def create_order(
    db_session: DbSession, order_id: FromPath[int], hold: FromQuery[float] = 0.0
) -> dict[str, object]:
    global inflight
    inflight += 1
    try:
        await db_session.execute(
            text("INSERT INTO bento_srv_order (id) VALUES (:id)"), {"id": order_id}
        )
        await asyncio.sleep(hold)
    finally:
        inflight -= 1
    # the phase at the end of the hold: "draining" once a SIGTERM arrived meanwhile
    return {"id": order_id, "phase": plugin.runtime.phase.value, "pid": os.getpid()}


@get("/_test/state", sync_to_thread=False)
def state() -> dict[str, object]:
    return {
        "inflight": inflight,
        "pings": plugin.runtime.pings,
        "phase": plugin.runtime.phase,
        "pid": os.getpid(),
    }


def record_shutdown() -> None:
    """Append this worker's drain result to ``BENTO_TEST_SHUTDOWN_LOG`` (runs after the drain).

    Plain file I/O: log records queued at shutdown can be lost when uvicorn re-raises
    SIGTERM and the process dies before Litestar's queue listener writes them.
    """
    path = os.environ.get("BENTO_TEST_SHUTDOWN_LOG")
    stats = plugin.runtime.drain_stats
    if path:
        line = {"pid": os.getpid(), "drain": dict(stats) if stats else None}
        with open(path, "a") as sink:
            sink.write(json.dumps(line) + "\n")


app = Litestar(
    route_handlers=[create_order, state], plugins=[plugin], on_shutdown=[record_shutdown]
)
