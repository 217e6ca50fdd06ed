"""A pytest plugin for the tests of apps built on litestar-bento-db.

Enable it in the top-level ``conftest.py``::

    pytest_plugins = ["litestar_bento_db.testing"]

It is not registered as an entry point: its fixture names (``db_session``, ...) would
then appear in the tests of every project that has this package installed.

The database comes from ``--db-url``, else ``TEST_DB_URL``, else the ``DB_*``
environment as :class:`~litestar_bento_db.DatabaseConfig` reads it. Fixtures:

- ``db_config``: that :class:`~litestar_bento_db.DatabaseConfig` (per session).
- ``db_engine``: an engine built from it (per session; its pool is safe across
  pytest-asyncio's event loops).
- ``db_connection``: a connection inside a transaction that is rolled back after the
  test, whatever the test and the code under test commit.
- ``db_session``: an ``AsyncSession`` on that connection in SAVEPOINT mode: its
  ``commit()`` releases a savepoint, its ``rollback()`` returns to one.
- ``db_client``: an ``httpx.AsyncClient`` serving the test's ``app`` fixture (which the
  user defines; started and stopped around the test), with the app's
  :class:`~litestar_bento_db.DatabasePlugin` sessions on that same connection: a
  request's commit, its 409 or 503 and its ``db_session_factory`` units of work stay
  inside the test's transaction, and ``db_session`` sees them. The app runs in the
  test's event loop (Litestar's ``AsyncTestClient`` runs it in a thread of its own,
  where the test's connection cannot be used). Requests run one at a time on it.
- ``db_faults``: :class:`DatabaseFaults` for that connection (a killed session, a
  statement time-out).

Requires pytest-asyncio and httpx (the ``testing`` extra).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from litestar_bento_db.config import DatabaseConfig
from litestar_bento_db.session import create_async_engine_from_config
from litestar_bento_db.testing.binding import bound_to_connection
from litestar_bento_db.testing.faults import DatabaseFaults

if TYPE_CHECKING:
    import httpx
    from litestar import Litestar

#: the base URL of ``db_client``'s requests
BASE_URL = "http://testserver.local"

__all__ = [
    "DatabaseFaults",
    "bound_to_connection",
    "db_client",
    "db_config",
    "db_connection",
    "db_engine",
    "db_faults",
    "db_session",
    "pytest_addoption",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--db-url``: the database of the ``db_*`` fixtures."""
    parser.getgroup("litestar-bento-db").addoption(
        "--db-url",
        default=None,
        help="database URL of the db_* fixtures (default: TEST_DB_URL, else DB_URL)",
    )


@pytest.fixture(scope="session")
def db_config(request: pytest.FixtureRequest) -> DatabaseConfig:
    """The test database's configuration: ``--db-url``, ``TEST_DB_URL``, else ``DB_*``."""
    url = request.config.getoption("--db-url") or os.environ.get("TEST_DB_URL")
    return DatabaseConfig(url=url) if url else DatabaseConfig()


def _begin_explicitly(engine: AsyncEngine) -> None:
    """SQLite: emit ``BEGIN`` ourselves, so that savepoints nest inside the transaction.

    Python's sqlite3 would begin only before a write, and the first SAVEPOINT would then
    be the outermost transaction: releasing it would commit (SQLAlchemy's documented
    recipe for pysqlite and aiosqlite).
    """

    @event.listens_for(engine.sync_engine, "connect")
    def no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


@pytest.fixture(scope="session")
def db_engine(db_config: DatabaseConfig) -> Iterator[AsyncEngine]:
    """The test database's engine, for the whole session, disposed at its end."""
    engine = create_async_engine_from_config(db_config)
    if engine.dialect.name == "sqlite":
        _begin_explicitly(engine)
    yield engine
    asyncio.run(engine.dispose())


@pytest_asyncio.fixture
async def db_connection(db_engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction that is rolled back after the test."""
    async with db_engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            try:
                if transaction.is_active:
                    await transaction.rollback()
            except SQLAlchemyError:  # the connection was lost (db_faults.kill_connection)
                await connection.invalidate()


@pytest_asyncio.fixture
async def db_session(db_connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    """A session on the test's connection; what it commits is rolled back afterwards."""
    session = AsyncSession(
        bind=db_connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        yield session
    finally:
        await session.close()


async def _run_lifespan(app: Litestar, started: asyncio.Event, stop: asyncio.Event) -> None:
    async with app.lifespan():
        started.set()
        await stop.wait()


@pytest_asyncio.fixture
async def db_client(
    app: Litestar, db_connection: AsyncConnection
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app``, started here, its database sessions in the test's transaction."""
    import httpx

    # the lifespan in a task of its own: pytest-asyncio may tear the fixture down in
    # another task, and the app's task groups must exit in the task that entered them
    started, stop = asyncio.Event(), asyncio.Event()
    lifespan = asyncio.create_task(_run_lifespan(app, started, stop))
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait([lifespan, waiting], return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():
        waiting.cancel()
        await lifespan  # startup failed: raises its error
    try:
        with bound_to_connection(app, db_connection):
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
                yield client
    finally:
        stop.set()
        await lifespan


@pytest.fixture
def db_faults(db_engine: AsyncEngine, db_connection: AsyncConnection) -> DatabaseFaults:
    """Real failures on the test's connection (:class:`DatabaseFaults`)."""
    return DatabaseFaults(db_engine, db_connection)
