"""litestar-bento-db's DatabasePlugin; ``/hold`` keeps a transaction open (drain benchmark)."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Litestar, get, post
from litestar.params import FromPath, FromQuery
from sqlalchemy import text

from benchmarks.apps.common import COMMAND_TIMEOUT, MAX_OVERFLOW, POOL_SIZE, PRE_PING, QUERY, URL
from litestar_bento_db import DatabaseConfig, DatabasePlugin, DbSession


@get("/items/{item_id:int}")
async def item(db_session: DbSession, item_id: FromPath[int]) -> dict[str, Any]:
    row = (await db_session.execute(QUERY, {"id": item_id})).one()
    return {"id": row.id, "name": row.name}


@post("/hold", status_code=200)
async def hold(db_session: DbSession, seconds: FromQuery[float] = 1.0) -> dict[str, float]:
    await db_session.execute(text("SELECT 1"))
    await asyncio.sleep(seconds)
    return {"held": seconds}


app = Litestar(
    route_handlers=[item, hold],
    plugins=[
        DatabasePlugin(
            DatabaseConfig(
                url=URL,
                pool_size=POOL_SIZE,
                max_overflow=MAX_OVERFLOW,
                pool_pre_ping=PRE_PING,
                command_timeout=COMMAND_TIMEOUT,
                warmup_connections=5,
            )
        )
    ],
)
