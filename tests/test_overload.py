"""Overload: a checkout that would wait in vain is refused at once, not after pool_timeout.

Against the real servers: connections held by a server-side sleep, more checkouts than
the pool has connections.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from litestar_bento_db import (
    DatabaseConfig,
    DatabasePlugin,
    DbSession,
    create_async_engine_from_config,
)
from litestar_bento_db.resilience import DatabaseErrorClassifier, ErrorCategory
from tests.conftest import database_kind

SLEEP = {"postgresql": "SELECT pg_sleep(:seconds)", "mysql": "SELECT SLEEP(:seconds)"}


@dataclass
class Outcome:
    waited: float  # seconds from the checkout's start to its connection or its error
    error: BaseException | None


async def _hold(engine: AsyncEngine, kind: str, seconds: float) -> Outcome:
    """One checkout whose connection a statement of the server holds ``seconds`` s."""
    started = time.perf_counter()
    try:
        async with engine.connect() as connection:
            waited = time.perf_counter() - started
            await connection.execute(text(SLEEP[kind]), {"seconds": seconds})
    except sa_exc.TimeoutError as error:
        return Outcome(time.perf_counter() - started, error)
    return Outcome(waited, None)


def _refused_at_once(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.error is not None and "refused at once" in str(o.error)]


async def test_a_checkout_whose_expected_wait_exceeds_pool_timeout_is_refused_at_once(
    server_backend: str, server_url: str
) -> None:
    kind = database_kind(server_backend)
    config = DatabaseConfig(url=server_url, pool_size=2, max_overflow=0, pool_timeout=0.6)
    engine = create_async_engine_from_config(config)
    try:
        # the pool learns that a connection is held about 0.25 s (its moving average
        # reaches about 0.2 s)
        await asyncio.gather(*(_hold(engine, kind, 0.25) for _ in range(8)))
        holders = [asyncio.ensure_future(_hold(engine, kind, 0.25)) for _ in range(2)]
        await asyncio.sleep(0.05)
        # 10 more: the k-th expects about k * 0.2 / 2 s; from the 6th on, more than 0.6 s
        outcomes = await asyncio.gather(*(_hold(engine, kind, 0.25) for _ in range(10)))
        await asyncio.gather(*holders)
    finally:
        await engine.dispose()
    refused = _refused_at_once(outcomes)
    assert 3 <= len(refused) <= 7, outcomes
    assert all(o.waited < 0.05 for o in refused), outcomes
    for outcome in refused:
        assert outcome.error is not None
        assert "exceeds pool_timeout (0.6 s)" in str(outcome.error)
        assert DatabaseErrorClassifier.classify(outcome.error) is ErrorCategory.TRANSIENT
    admitted = [o for o in outcomes if o not in refused]
    assert sum(o.error is None for o in admitted) >= 3, outcomes
    # an admitted checkout got its connection, or gave up after pool_timeout, not sooner
    assert all(o.error is None or o.waited >= 0.55 for o in admitted), outcomes


async def test_max_pending_bounds_the_checkouts_waiting(
    server_backend: str, server_url: str
) -> None:
    kind = database_kind(server_backend)
    config = DatabaseConfig(
        url=server_url, pool_size=1, max_overflow=0, pool_timeout=5.0, max_pending=2
    )
    engine = create_async_engine_from_config(config)
    try:
        holder = asyncio.ensure_future(_hold(engine, kind, 0.3))
        await asyncio.sleep(0.05)
        outcomes = await asyncio.gather(*(_hold(engine, kind, 0.1) for _ in range(5)))
        assert (await holder).error is None
        metrics = engine.sync_engine.pool.observer  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
    refused = _refused_at_once(outcomes)
    assert len(refused) == 3, outcomes
    assert metrics.timeouts == 3  # db.client.connection.timeouts, once each
    assert all(o.waited < 0.05 and "max_pending" in str(o.error) for o in refused), outcomes
    assert sum(o.error is None for o in outcomes) == 2, outcomes


async def test_a_burst_of_short_checkouts_is_not_refused(
    server_backend: str, server_url: str
) -> None:
    """50 checkouts at once on 2 connections: each waits a few milliseconds, far below
    pool_timeout, so none is refused (a limit by count alone would refuse most)."""
    config = DatabaseConfig(url=server_url, pool_size=2, max_overflow=0, pool_timeout=1.0)
    engine = create_async_engine_from_config(config)

    async def short() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    try:
        for _ in range(3):
            await asyncio.gather(*(short() for _ in range(50)))
    finally:
        await engine.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_the_plugin_answers_an_overload_503_at_once(kind: str) -> None:
    from tests.conftest import require_server

    @get("/slow")
    async def slow(db_session: DbSession) -> dict[str, str]:
        await db_session.execute(text(SLEEP[kind]), {"seconds": 0.3})
        return {"ok": "yes"}

    database = DatabaseConfig(
        url=require_server(kind), pool_size=2, max_overflow=0, pool_timeout=1.0
    )
    app = Litestar(route_handlers=[slow], plugins=[DatabasePlugin(database)])
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # concurrent requests, in this loop

    async def timed() -> tuple[int, float, str | None]:
        started = time.perf_counter()
        response = await client.get("http://test/slow")
        took = time.perf_counter() - started
        return response.status_code, took, response.headers.get("retry-after")

    async with AsyncTestClient(app), httpx.AsyncClient(transport=transport) as client:
        await asyncio.gather(*(timed() for _ in range(8)))  # the hold time, learnt
        answers = await asyncio.gather(*(timed() for _ in range(14)))
    unavailable = [a for a in answers if a[0] == 503]
    assert {a[0] for a in answers} == {200, 503}, answers
    assert all(retry_after is not None for _, _, retry_after in unavailable), answers
    # refused at once, or (the estimate is a mean) waited its pool_timeout in vain
    at_once = [a for a in unavailable if a[1] < 0.2]
    assert len(at_once) >= 4, str([(s, round(t, 3)) for s, t, _ in answers])
    assert all(took >= 0.95 for _, took, _ in unavailable if took >= 0.2), answers
