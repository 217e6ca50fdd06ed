"""The floor: the same SQL through a bare asyncpg pool, no SQLAlchemy.

``fetchrow``/``fetch`` for the reads (one round trip each) and ``INSERT ... RETURNING`` in
a transaction for the write. The pool has the other apps' size (10, up to 20) and driver
settings; its reset-on-release query is switched off (the handlers leave no session
state behind), so that nothing but the work crosses the network.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar import Litestar, get, post
from litestar.params import FromPath, FromQuery
from sqlalchemy import make_url

from benchmarks.apps.common import (
    COMMAND_TIMEOUT,
    MAX_OVERFLOW,
    PAGE,
    POOL_SIZE,
    SERVER_SETTINGS,
    URL,
    OrderIn,
)

DSN = make_url(URL).set(drivername="postgresql").render_as_string(hide_password=False)
GET_ITEM = "SELECT id, name FROM bench_item WHERE id = $1"
LIST_ITEMS = "SELECT id, name FROM bench_item WHERE id > $1 ORDER BY id LIMIT $2"
INSERT_ORDER = "INSERT INTO bench_order (item_id, quantity) VALUES ($1, $2) RETURNING id"


class Pool:
    pool: Any = None  # asyncpg.Pool once started


async def _no_reset(_connection: Any) -> None:
    return None


async def start_pool() -> None:
    Pool.pool = await asyncpg.create_pool(
        DSN,
        min_size=POOL_SIZE,
        max_size=POOL_SIZE + MAX_OVERFLOW,
        command_timeout=COMMAND_TIMEOUT or None,
        server_settings=SERVER_SETTINGS,
        reset=_no_reset,
    )


async def close_pool() -> None:
    await Pool.pool.close()


@get("/items/{item_id:int}")
async def get_item(item_id: FromPath[int]) -> dict[str, Any]:
    row = await Pool.pool.fetchrow(GET_ITEM, item_id)
    return {"id": row["id"], "name": row["name"]}


@get("/items")
async def list_items(after: FromQuery[int] = 0) -> list[dict[str, Any]]:
    rows = await Pool.pool.fetch(LIST_ITEMS, after, PAGE)
    return [{"id": row["id"], "name": row["name"]} for row in rows]


@post("/orders", status_code=201)
async def create_order(data: OrderIn) -> dict[str, int]:
    async with Pool.pool.acquire() as connection, connection.transaction():
        order_id = await connection.fetchval(INSERT_ORDER, data.item_id, data.quantity)
    return {"id": order_id}


app = Litestar(
    route_handlers=[get_item, list_items, create_order],
    on_startup=[start_pool],
    on_shutdown=[close_pool],
)
