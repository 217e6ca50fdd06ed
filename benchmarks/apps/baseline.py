"""Baseline: a hand-written Litestar + SQLAlchemy app, one session per request.

The session is committed when the handler has returned (the dependency's cleanup), with
SQLAlchemy's own ``pool_pre_ping=True``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from litestar import Litestar
from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from benchmarks.apps.common import HANDLERS, POOL, URL

engine = create_async_engine(URL, **POOL)
sessions = async_sessionmaker(engine, expire_on_commit=False)


async def provide_session() -> AsyncGenerator[AsyncSession, None]:
    async with sessions() as session:
        yield session
        await session.commit()


async def dispose() -> None:
    await engine.dispose()


app = Litestar(
    route_handlers=HANDLERS,
    dependencies={"db_session": Provide(provide_session)},
    on_shutdown=[dispose],
)
