"""The app the chaos tests load while they break its database; settings from DB_*.

Two kinds of writes, each with a key the client chose: the request's own session
(committed before the status is sent) and a unit of work retried whole.
"""

from __future__ import annotations

from litestar import Litestar, post
from litestar.params import FromPath
from sqlalchemy import text

from litestar_bento_db import DatabasePlugin, DbSession, DbSessionFactory, HealthConfig
from litestar_bento_db.resilience import RetryConfig, retry_on_db_error

INSERT = text("INSERT INTO bento_chaos (k, via) VALUES (:k, :via)")

plugin = DatabasePlugin(
    # readiness_timeout: the default (2 s). Under the tests' load on two cores a ping waits
    # 0.2-0.4 s at times for a connection and the CPU, and once took over 1 s.
    health=HealthConfig(path="/api/v1/common/health", cache_ttl=0.2, retry_after=1),
    startup_retry_max_delay=0.5,
    drain_timeout=5.0,
)


@post("/direct/{key:str}", status_code=201)
async def direct(db_session: DbSession, key: FromPath[str]) -> dict[str, str]:
    await db_session.execute(INSERT, {"k": key, "via": "direct"})
    return {"key": key}


@post("/unit/{key:str}", status_code=201)
async def unit(db_session_factory: DbSessionFactory, key: FromPath[str]) -> dict[str, str]:
    async def write() -> None:
        async with db_session_factory() as session, session.begin():
            await session.execute(INSERT, {"k": key, "via": "unit"})

    await retry_on_db_error(write, config=RetryConfig(max_attempts=3, base_delay=0.05))
    return {"key": key}


app = Litestar(route_handlers=[direct, unit], plugins=[plugin])
