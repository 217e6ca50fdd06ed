"""Baseline: a hand-written Litestar + SQLAlchemy app, one session per request."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from litestar import Litestar, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from benchmarks.apps.common import POOL, QUERY, URL

engine = create_async_engine(URL, **POOL)
sessions = async_sessionmaker(engine, expire_on_commit=False)


async def provide_session() -> AsyncGenerator[AsyncSession, None]:
    async with sessions() as session:
        yield session
        await session.commit()


@get("/items/{item_id:int}")
async def item(db_session: NamedDependency[AsyncSession], item_id: FromPath[int]) -> dict[str, Any]:
    row = (await db_session.execute(QUERY, {"id": item_id})).one()
    return {"id": row.id, "name": row.name}


async def dispose() -> None:
    await engine.dispose()


app = Litestar(
    route_handlers=[item],
    dependencies={"db_session": Provide(provide_session)},
    on_shutdown=[dispose],
)
