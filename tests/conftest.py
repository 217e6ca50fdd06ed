"""Shared fixtures: one suite over SQLite (file and memory), PostgreSQL and MariaDB.

Server URLs come from ``TEST_POSTGRES_URL``, ``TEST_MYSQL_URL`` and ``TEST_REPLICA_URL``
(the PostgreSQL hot standby; defaults: the local servers). An unreachable server skips
its tests locally and fails them when ``CI=true``.

``TEST_PG_DRIVER`` (``asyncpg``, the default, or ``psycopg``) picks the PostgreSQL
driver of the default URLs. With ``psycopg``, the tests that run on MariaDB or SQLite
only are left out, and the slow scenarios marked ``driver_independent``: ``make test``
runs the suite once, then its PostgreSQL part again on psycopg.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from tests.servers import Server

#: the PostgreSQL driver under test (``make test`` runs the PostgreSQL tests on both)
PG_DRIVER = os.environ.get("TEST_PG_DRIVER", "asyncpg")
#: the scheme of PostgreSQL URLs the tests build
PG_SCHEME = f"postgresql+{PG_DRIVER}"
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", f"{PG_SCHEME}://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")
#: the hot standby of the PostgreSQL server (scripts/ensure-replica.sh)
REPLICA_URL = os.environ.get("TEST_REPLICA_URL", f"{PG_SCHEME}://postgres@127.0.0.1:5433/test")
SERVER_URLS = {"postgresql": POSTGRES_URL, "mysql": MYSQL_URL}
ALL_BACKENDS = ["sqlite_file", "sqlite_memory", "postgresql", "mysql"]
SERVER_BACKENDS = ["postgresql", "mysql"]
#: a password that must never show up in any output
SECRET = "s3cr3t-Pa55word"

_reachable: dict[str, bool] = {}
#: parameter values of tests that touch no PostgreSQL server
_NOT_POSTGRES = frozenset({"mysql", "sqlite", "sqlite_file", "sqlite_memory"})


def pytest_report_header() -> str:
    return f"PostgreSQL driver: {PG_DRIVER} (TEST_PG_DRIVER)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On psycopg, leave out the tests of the other databases and the ``driver_independent``
    scenarios (asyncpg's run has them)."""
    if PG_DRIVER == "asyncpg":
        return

    def other_database(item: pytest.Item) -> bool:
        if item.get_closest_marker("driver_independent") is not None:
            return True
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        values = {value for value in params if isinstance(value, str)}
        if "postgresql" in values:
            return False
        if values & _NOT_POSTGRES:
            return True
        name = item.name.lower()
        return ("mysql" in name or "mariadb" in name or "sqlite" in name) and "pg" not in name

    dropped = [item for item in items if other_database(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not other_database(item)]


def _is_reachable(url: str) -> bool:
    if url not in _reachable:
        parsed = make_url(url)
        try:
            with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 0), 2):
                _reachable[url] = True
        except OSError:
            _reachable[url] = False
    return _reachable[url]


def require_server(kind: str) -> str:
    """The server URL for ``kind``; skip (locally) or fail (CI) when it is down."""
    url = SERVER_URLS[kind]
    if not _is_reachable(url):
        reason = f"{kind} server not reachable at {make_url(url).host}:{make_url(url).port}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return url


def require_replica() -> str:
    """The PostgreSQL replica's URL; skip (locally) or fail (CI) when it is down."""
    url = REPLICA_URL
    if not _is_reachable(url):
        parsed = make_url(url)
        reason = f"PostgreSQL replica not reachable at {parsed.host}:{parsed.port}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true: {reason} (scripts/ensure-replica.sh)")
        pytest.skip(reason)
    return url


def database_kind(backend: str) -> str:
    """``"sqlite"``, ``"postgresql"`` or ``"mysql"`` for one of ``ALL_BACKENDS``."""
    return "sqlite" if backend.startswith("sqlite") else backend


def backend_url(backend: str, tmp_path: Path) -> str:
    """A database URL for one of ``ALL_BACKENDS``."""
    if backend == "sqlite_file":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    if backend == "sqlite_memory":
        return "sqlite+aiosqlite:///:memory:"
    return require_server(backend)


async def create_password_user(backend: str, user: str) -> str:
    """Create ``user`` afresh on a server, with password ``SECRET``; return its URL.

    PostgreSQL here trusts local connections (the password is not checked); MariaDB
    checks it. On MariaDB the user gets every right on the ``test`` database; on
    PostgreSQL grant table rights with :func:`grant_table`.
    """
    admin = create_async_engine_from_config(DatabaseConfig(url=require_server(backend)))
    try:
        async with admin.begin() as c:
            if backend == "postgresql":
                exists = await c.execute(
                    text("SELECT 1 FROM pg_roles WHERE rolname = :u"), {"u": user}
                )
                if exists.first():
                    await c.execute(text(f"DROP OWNED BY {user}"))
                    await c.execute(text(f"DROP ROLE {user}"))
                await c.execute(text(f"CREATE ROLE {user} LOGIN PASSWORD '{SECRET}'"))
            else:
                await c.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
                await c.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{SECRET}'"))
                await c.execute(text(f"GRANT ALL ON test.* TO '{user}'@'%'"))
    finally:
        await admin.dispose()
    scheme = PG_SCHEME if backend == "postgresql" else "mysql"
    return f"{scheme}://{user}:{SECRET}@127.0.0.1/test"


@pytest.fixture(params=ALL_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=SERVER_BACKENDS)
def server_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> str:
    return backend_url(backend, tmp_path)


@pytest.fixture
def server_url(server_backend: str) -> str:
    return require_server(server_backend)


@pytest.fixture
def config(db_url: str) -> DatabaseConfig:
    return DatabaseConfig(url=db_url, pool_size=3, max_overflow=2, application_name="bento-tests")


@pytest.fixture
async def engine(config: DatabaseConfig) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine_from_config(config)
    yield engine
    await engine.dispose()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``DB_*`` or ``DATABASE_URL`` variables from the outer environment."""
    for name in list(os.environ):
        if name.startswith("DB_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Test app processes started by a test; killed afterwards if still running."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def records_of(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    """What ``logger_name`` logs while inside (Litestar's logging config replaces caplog's
    handler, so a handler of our own on the logger)."""
    handler = _Records()
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
