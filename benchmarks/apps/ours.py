"""litestar-bento-db's DatabasePlugin; ``/hold`` keeps a transaction open (drain benchmark).

Defaults (pre-ping on: our liveness checks; metrics on) with the pool and driver settings
of the other apps. Variants, chosen by the environment of the server process:

- ``BENCH_METRICS=0``: ``DatabaseConfig(metrics=False)``;
- ``BENCH_FREEZE_GC=0``: ``DatabasePlugin(..., freeze_gc=False)`` (on by default);
- ``BENCH_REPLICA_URL=...``: ``DatabaseConfig(read_replica_urls=(...,))``.
"""

from __future__ import annotations

import asyncio
import os

from litestar import Litestar, post
from litestar.params import FromQuery
from sqlalchemy import text

from benchmarks.apps.common import (
    COMMAND_TIMEOUT,
    HANDLERS,
    MAX_OVERFLOW,
    POOL_SIZE,
    POOL_TIMEOUT,
    PRE_PING,
    REPLICA_URL,
    URL,
)
from litestar_bento_db import DatabaseConfig, DatabasePlugin, DbSession


@post("/hold", status_code=200)
async def hold(db_session: DbSession, seconds: FromQuery[float] = 1.0) -> dict[str, float]:
    await db_session.execute(text("SELECT 1"))
    await asyncio.sleep(seconds)
    return {"held": seconds}


config = DatabaseConfig(
    url=URL,
    pool_size=POOL_SIZE,
    max_overflow=MAX_OVERFLOW,
    pool_timeout=POOL_TIMEOUT,
    pool_pre_ping=PRE_PING,
    command_timeout=COMMAND_TIMEOUT,
    warmup_connections=5,
    metrics=os.environ.get("BENCH_METRICS", "1") != "0",
    read_replica_urls=(REPLICA_URL,) if REPLICA_URL else (),
)
app = Litestar(
    route_handlers=[*HANDLERS, hold],
    plugins=[DatabasePlugin(config, freeze_gc=os.environ.get("BENCH_FREEZE_GC") != "0")],
)
