"""Multi-host PostgreSQL URLs against the real primary (5432) and hot standby (5433).

Both forms (libpq's ``h1:p1,h2:p2`` and SQLAlchemy's ``?host=h:p&host=h:p``) on the
driver under test (asyncpg or psycopg: ``TEST_PG_DRIVER``), with
``target_session_attrs`` choosing the server; no host that fits is a connection error
(503 in a request), not a 500.
"""

from __future__ import annotations

import asyncio

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from litestar_bento_db import (
    DatabaseConfig,
    DatabasePlugin,
    DbSession,
    HealthConfig,
    create_async_engine_from_config,
)
from litestar_bento_db.resilience import DatabaseErrorClassifier, ErrorCategory
from tests.conftest import PG_SCHEME, require_replica, require_server

DEAD = "127.0.0.1:5999"  # nothing listens there


def _hosts() -> tuple[str, str]:
    """``host:port`` of the primary and of the standby."""
    primary, standby = make_url(require_server("postgresql")), make_url(require_replica())
    return f"{primary.host}:{primary.port}", f"{standby.host}:{standby.port}"


def _libpq(*hosts: str, attrs: str | None = None) -> str:
    query = f"?target_session_attrs={attrs}" if attrs else ""
    return f"{PG_SCHEME}://postgres@{','.join(hosts)}/test{query}"


def _sqlalchemy(*hosts: str, attrs: str | None = None) -> str:
    keys = [f"host={host}" for host in hosts] + ([f"target_session_attrs={attrs}"] if attrs else [])
    return f"{PG_SCHEME}://postgres@/test?{'&'.join(keys)}"


async def _server_of(url: str) -> tuple[int, bool]:
    """The port and recovery state of the server ``url`` connects to."""
    engine = create_async_engine_from_config(DatabaseConfig(url=url))
    try:
        async with engine.connect() as connection:
            row = await connection.execute(text("SELECT inet_server_port(), pg_is_in_recovery()"))
            port, recovery = row.one()
            return int(port), bool(recovery)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("form", [_libpq, _sqlalchemy])
def test_target_session_attrs_chooses_the_server(form: object) -> None:
    build = form if callable(form) else _libpq
    primary, standby = _hosts()
    primary_port, standby_port = int(primary.split(":")[1]), int(standby.split(":")[1])
    for attrs in ("read-write", "primary"):
        assert asyncio.run(_server_of(build(standby, primary, attrs=attrs))) == (
            primary_port,
            False,
        )
    for attrs in ("standby", "prefer-standby"):
        assert asyncio.run(_server_of(build(primary, standby, attrs=attrs))) == (
            standby_port,
            True,
        )
    # a host that does not answer is skipped
    assert asyncio.run(_server_of(build(DEAD, primary))) == (primary_port, False)


@get("/now")
async def now(db_session: DbSession) -> str:
    return str((await db_session.execute(text("SELECT now()"))).scalar_one())


@pytest.mark.parametrize("dead_host_first", [False, True])
def test_no_host_that_fits_is_a_connection_error_answered_503(dead_host_first: bool) -> None:
    """Only a standby (asyncpg: TargetServerAttributeNotMatched), or a refusal first."""
    _, standby = _hosts()
    url = _libpq(*([DEAD] if dead_host_first else []), standby, attrs="read-write")

    async def connect() -> BaseException:
        engine = create_async_engine_from_config(DatabaseConfig(url=url))
        try:
            async with engine.connect():
                pass
        except (DBAPIError, OSError) as error:  # asyncpg may raise the refusal of a host
            return error
        finally:
            await engine.dispose()
        raise AssertionError("a standby was taken for a primary")

    assert DatabaseErrorClassifier.classify(asyncio.run(connect())) is ErrorCategory.CONNECTION
    config = DatabaseConfig(url=url, pool_timeout=2, connect_timeout=2)
    app = Litestar([now], plugins=[DatabasePlugin(config, health=HealthConfig(retry_after=4))])
    with TestClient(app) as client:
        response = client.get("/now")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "4"
        ready = client.get("/health/readiness")
        assert ready.status_code == 503


def test_the_plugin_serves_through_a_multi_host_url() -> None:
    primary, standby = _hosts()
    config = DatabaseConfig(url=_sqlalchemy(standby, DEAD, primary, attrs="read-write"))
    app = Litestar([now], plugins=[DatabasePlugin(config)])
    with TestClient(app) as client:
        assert client.get("/now").status_code == 200
        assert client.get("/health/readiness").status_code == 200
    assert config.metrics_pool_name == f"{standby},{DEAD},{primary}/test"
