"""What the benchmark apps share: URLs, pool and driver settings, the ORM model, handlers.

The three workloads, identical in every SQLAlchemy app (the handlers below) and done with
the same SQL by the raw asyncpg app (``benchmarks.apps.raw``):

- ``GET /items/{id}``: one row by primary key (``select(Item).where(Item.id == id)``);
- ``GET /items?after=N``: a list of 20 ORM rows after ``N``, in key order;
- ``POST /orders``: an ORM insert (``session.add(Order(...))``, ``flush()`` for its id),
  committed by the app's own path, answered 201 with the id.

And ``GET /slow?seconds=S`` for the overload benchmark: a statement that holds the
request's connection ``S`` seconds (``pg_sleep``).
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from sqlalchemy import String, delete, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

URL = os.environ.get("BENCH_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
#: a hot-standby replica of URL's database; set only for the replica variant of ours
REPLICA_URL = os.environ.get("BENCH_REPLICA_URL", "")
#: identical pool settings in all apps (pre-ping on, as this package's default); the
#: overload benchmark sets smaller ones through the environment
POOL_SIZE = int(os.environ.get("BENCH_POOL_SIZE", "10"))
MAX_OVERFLOW = int(os.environ.get("BENCH_MAX_OVERFLOW", "10"))
POOL_TIMEOUT = float(os.environ.get("BENCH_POOL_TIMEOUT", "30"))
PRE_PING = True
#: identical driver settings too: asyncpg's per-statement time limit (the usage guide's 60 s,
#: this package's default; asyncpg arms a timer for every statement; 0 for none) and jit off
COMMAND_TIMEOUT = float(os.environ.get("BENCH_COMMAND_TIMEOUT", "60"))
SERVER_SETTINGS = {"jit": "off"}
#: psycopg's equivalent: the same settings as startup options (its statement time limit
#: is the server's; this package adds a client-side timer for stalls on top)
PSYCOPG_OPTIONS = " ".join(
    [f"-c {name}={value}" for name, value in SERVER_SETTINGS.items()]
    + ([f"-c statement_timeout={round(COMMAND_TIMEOUT * 1000)}"] if COMMAND_TIMEOUT else [])
)
POOL: dict[str, object] = {
    "pool_size": POOL_SIZE,
    "max_overflow": MAX_OVERFLOW,
    "pool_timeout": POOL_TIMEOUT,
    "pool_pre_ping": PRE_PING,
    "connect_args": (
        {"options": PSYCOPG_OPTIONS}
        if URL.startswith("postgresql+psycopg")
        else {"command_timeout": COMMAND_TIMEOUT or None, "server_settings": SERVER_SETTINGS}
    ),
}
ROWS = 1000
PAGE = 20


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bench_item"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(40))


class Order(Base):
    __tablename__ = "bench_order"

    id: Mapped[int] = mapped_column(primary_key=True)  # serial
    item_id: Mapped[int]
    quantity: Mapped[int]


class OrderIn(msgspec.Struct):
    """The body of ``POST /orders``."""

    item_id: int
    quantity: int


@get("/items/{item_id:int}")
async def get_item(
    db_session: NamedDependency[AsyncSession], item_id: FromPath[int]
) -> dict[str, Any]:
    item = (await db_session.execute(select(Item).where(Item.id == item_id))).scalar_one()
    return {"id": item.id, "name": item.name}


@get("/items")
async def list_items(
    db_session: NamedDependency[AsyncSession], after: FromQuery[int] = 0
) -> list[dict[str, Any]]:
    items = await db_session.scalars(
        select(Item).where(Item.id > after).order_by(Item.id).limit(PAGE)
    )
    return [{"id": item.id, "name": item.name} for item in items]


@post("/orders", status_code=201)
async def create_order(db_session: NamedDependency[AsyncSession], data: OrderIn) -> dict[str, int]:
    order = Order(item_id=data.item_id, quantity=data.quantity)
    db_session.add(order)
    await db_session.flush()  # INSERT ... RETURNING id; the app's own path commits
    return {"id": order.id}


@get("/slow")
async def slow(db_session: NamedDependency[AsyncSession], seconds: FromQuery[float]) -> str:
    await db_session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
    return "slept"


#: the workload handlers of every SQLAlchemy app (session injected as ``db_session``)
HANDLERS = [get_item, list_items, create_order, slow]


async def create_tables(engine: AsyncEngine) -> None:
    """(Re)create ``bench_item`` with ``ROWS`` rows and an empty ``bench_order``."""
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.drop_all)
        await connection.run_sync(Base.metadata.create_all)
        await connection.execute(
            insert(Item), [{"id": i, "name": f"item {i}"} for i in range(1, ROWS + 1)]
        )


async def empty_orders(engine: AsyncEngine) -> None:
    """Delete what the insert workload wrote."""
    async with engine.begin() as connection:
        await connection.execute(delete(Order))
