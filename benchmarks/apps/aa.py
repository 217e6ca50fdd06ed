"""advanced-alchemy's SQLAlchemyPlugin with its autocommit handler."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemyPlugin,
)
from litestar import Litestar, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from benchmarks.apps.common import POOL, QUERY, URL


@get("/items/{item_id:int}")
async def item(db_session: NamedDependency[AsyncSession], item_id: FromPath[int]) -> dict[str, Any]:
    row = (await db_session.execute(QUERY, {"id": item_id})).one()
    return {"id": row.id, "name": row.name}


config = SQLAlchemyAsyncConfig(
    connection_string=URL,
    engine_config=EngineConfig(**POOL),  # type: ignore[arg-type]
    session_config=AsyncSessionConfig(expire_on_commit=False),
    before_send_handler="autocommit",
)
app = Litestar(route_handlers=[item], plugins=[SQLAlchemyPlugin(config=config)])
