"""Database errors raised inside a request are answered by what the database reported.

Real errors from real servers: constraint violations, a database that is down, a
statement over its time limit, an exhausted pool, a retried unit of work whose attempts
run out, errors through advanced-alchemy's repository. No body carries SQL, values,
URLs or passwords; the app's own exception handlers win.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from advanced_alchemy.base import BigIntBase
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from litestar import Litestar, Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.testing import AsyncTestClient, TestClient
from sqlalchemy import String, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from litestar_bento_db import (
    DatabaseConfig,
    DatabasePlugin,
    DbSession,
    DbSessionFactory,
    HealthConfig,
    create_async_engine_from_config,
)
from litestar_bento_db.resilience import RetryBudget, RetryConfig, retry_on_db_error
from tests.conftest import SECRET, backend_url, database_kind, records_of, require_server
from tests.proxy import TcpProxy

EMAIL = "alice.private@example.com"

SCHEMA = {
    "postgresql": [
        "DROP TABLE IF EXISTS bento_item",
        "DROP TABLE IF EXISTS bento_owner",
        "CREATE TABLE bento_owner (id int PRIMARY KEY)",
        "CREATE TABLE bento_item (id int PRIMARY KEY, email varchar(80) NOT NULL, "
        "owner_id int NULL, stock int NOT NULL DEFAULT 0, "
        "CONSTRAINT bento_item_email_key UNIQUE (email), "
        "CONSTRAINT bento_item_owner_fk FOREIGN KEY (owner_id) REFERENCES bento_owner (id), "
        "CONSTRAINT bento_item_stock_check CHECK (stock >= 0))",
    ],
    "mysql": [
        "DROP TABLE IF EXISTS bento_item",
        "DROP TABLE IF EXISTS bento_owner",
        "CREATE TABLE bento_owner (id int PRIMARY KEY) ENGINE=InnoDB",
        "CREATE TABLE bento_item (id int PRIMARY KEY, email varchar(80) NOT NULL, "
        "owner_id int NULL, stock int NOT NULL DEFAULT 0, "
        "CONSTRAINT bento_item_email_key UNIQUE (email), "
        "CONSTRAINT bento_item_owner_fk FOREIGN KEY (owner_id) REFERENCES bento_owner (id), "
        "CONSTRAINT bento_item_stock_check CHECK (stock >= 0)) ENGINE=InnoDB",
    ],
    "sqlite": [
        "DROP TABLE IF EXISTS bento_item",
        "DROP TABLE IF EXISTS bento_owner",
        "CREATE TABLE bento_owner (id int PRIMARY KEY)",
        "CREATE TABLE bento_item (id int PRIMARY KEY, email varchar(80) NOT NULL, "
        "owner_id int NULL REFERENCES bento_owner (id), stock int NOT NULL DEFAULT 0, "
        "CONSTRAINT bento_item_email_key UNIQUE (email), "
        "CONSTRAINT bento_item_stock_check CHECK (stock >= 0))",
    ],
}
#: the name each database reports for the unique constraint
UNIQUE_NAME = {
    "postgresql": "bento_item_email_key",
    "mysql": "bento_item_email_key",
    "sqlite": "bento_item.email",
}


class Widget(BigIntBase):
    __tablename__ = "bento_widget"
    email: Mapped[str] = mapped_column(String(80), unique=True)


class WidgetRepository(SQLAlchemyAsyncRepository[Widget]):
    model_type = Widget


INSERT = text("INSERT INTO bento_item (id, email, owner_id, stock) VALUES (:id, :e, :o, :s)")


@post("/items/{item_id:int}")
async def add_item(
    db_session: DbSession,
    item_id: FromPath[int],
    owner: FromQuery[int | None] = None,
    stock: FromQuery[int] = 0,
) -> dict[str, int]:
    await db_session.execute(INSERT, {"id": item_id, "e": EMAIL, "o": owner, "s": stock})
    await db_session.flush()
    return {"id": item_id}


@post("/items/{item_id:int}/null-email")
async def add_item_without_email(db_session: DbSession, item_id: FromPath[int]) -> None:
    await db_session.execute(INSERT, {"id": item_id, "e": None, "o": None, "s": 0})


@get("/broken-sql")
async def broken_sql(db_session: DbSession) -> None:
    await db_session.execute(text(f"SELECT '{SECRET}' FROM no_such_table_here"))


@get("/slow")
async def slow(db_session: DbSession) -> None:
    sleep = (
        "SELECT pg_sleep(3)"
        if db_session.get_bind().dialect.name == "postgresql"
        else "SELECT SLEEP(3)"
    )
    await db_session.execute(text(sleep))


@get("/read")
async def read(db_session: DbSession) -> dict[str, int]:
    return {"n": int((await db_session.execute(text("SELECT 1"))).scalar_one())}


@get("/hold")
async def hold(db_session: DbSession) -> None:
    await db_session.execute(text("SELECT 1"))
    await asyncio.sleep(1.0)


@post("/locked")
async def locked(db_session_factory: DbSessionFactory) -> None:
    """A retried unit of work that meets a locked row on every attempt."""

    async def take_the_row() -> None:
        async with db_session_factory() as session, session.begin():
            await session.execute(text("SELECT id FROM bento_owner WHERE id = 1 FOR UPDATE NOWAIT"))

    config = RetryConfig(max_attempts=3, base_delay=0.01, budget=RetryBudget())
    await retry_on_db_error(take_the_row, config=config)


@post("/widgets")
async def add_widget(db_session: DbSession) -> dict[str, int]:
    widget = await WidgetRepository(session=db_session).add(Widget(email=EMAIL), auto_commit=False)
    return {"id": widget.id}


@get("/widgets/{widget_id:int}")
async def get_widget(db_session: DbSession, widget_id: FromPath[int]) -> dict[str, int]:
    return {"id": (await WidgetRepository(session=db_session).get(widget_id)).id}


@get("/idle-in-transaction")
async def idle_in_transaction(db_session: DbSession, blocking: FromQuery[bool] = False) -> None:
    """Holds a transaction idle past the server's limit: the server ends the session."""
    await db_session.execute(text("SET idle_in_transaction_session_timeout = '100ms'"))
    await db_session.execute(text("SELECT 1"))
    if blocking:  # the loop does not see the server's goodbye before the next statement
        time.sleep(0.3)  # noqa: ASYNC251
    else:
        await asyncio.sleep(0.3)
    await db_session.execute(text("SELECT 2"))


@get("/not-database")
async def not_database() -> None:
    raise FileNotFoundError(f"/etc/{SECRET}")


HANDLERS = [
    add_item,
    add_item_without_email,
    broken_sql,
    slow,
    read,
    hold,
    locked,
    add_widget,
    get_widget,
    idle_in_transaction,
    not_database,
]


async def _setup(url: str, kind: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=url))
    async with engine.begin() as connection:
        for statement in SCHEMA[kind]:
            await connection.execute(text(statement))
        await connection.execute(text("INSERT INTO bento_owner (id) VALUES (1)"))
        table = Widget.metadata.tables["bento_widget"]
        await connection.run_sync(table.drop, checkfirst=True)
        await connection.run_sync(table.create)
    await engine.dispose()


def _app(url: str, exception_handlers: Any = None) -> Litestar:
    database = DatabaseConfig(url=url, pool_size=2, max_overflow=0, command_timeout=1.0)
    return Litestar(
        route_handlers=HANDLERS,
        plugins=[DatabasePlugin(database, health=HealthConfig(retry_after=7))],
        exception_handlers=exception_handlers or {},
    )


@pytest.fixture(params=["sqlite_file", "postgresql", "mysql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every database (an in-memory SQLite one cannot be set up from a second engine)."""
    return str(request.param)


@pytest.fixture
def client(backend: str, tmp_path: Path) -> Iterator[TestClient[Litestar]]:
    url = backend_url(backend, tmp_path)
    asyncio.run(_setup(url, database_kind(backend)))
    with TestClient(_app(url)) as test_client:
        yield test_client


@pytest.fixture
def answers_log() -> Iterator[list[logging.LogRecord]]:
    """What the error answers logged."""
    with records_of("litestar_bento_db.litestar.errors") as records:
        yield records


def _no_secrets(response: Any) -> None:
    for secret in (EMAIL, SECRET, "INSERT", "SELECT", "postgresql://", "mysql://"):
        assert secret not in response.text


def test_unique_violation_is_409_naming_the_constraint(
    client: TestClient[Litestar], backend: str
) -> None:
    assert client.post("/items/1").status_code == 201
    response = client.post("/items/2")
    assert response.status_code == 409
    body = response.json()
    assert body["status_code"] == 409
    assert body["extra"] == {
        "constraint": UNIQUE_NAME[database_kind(backend)],
        "constraint_kind": "unique",
    }
    assert "retry-after" not in response.headers
    _no_secrets(response)


def test_foreign_key_and_check_violations_are_409(
    client: TestClient[Litestar], backend: str
) -> None:
    orphan = client.post("/items/1", params={"owner": 99})
    assert orphan.status_code == 409
    assert orphan.json()["extra"]["constraint_kind"] == "foreign_key"
    negative = client.post("/items/2", params={"stock": -5})
    assert negative.status_code == 409
    assert negative.json()["extra"]["constraint_kind"] == "check"
    if database_kind(backend) != "sqlite":  # SQLite reports no name for a foreign key
        assert orphan.json()["extra"]["constraint"] == "bento_item_owner_fk"
    assert negative.json()["extra"]["constraint"] in ("bento_item_stock_check", "stock >= 0")
    for response in (orphan, negative):
        _no_secrets(response)
        assert "-5" not in response.text
        assert "99" not in response.text


def test_other_permanent_errors_stay_500_without_sql(
    client: TestClient[Litestar], answers_log: list[logging.LogRecord]
) -> None:
    for path, method in (("/broken-sql", client.get), ("/items/3/null-email", client.post)):
        answers_log.clear()
        response = method(path)
        assert response.status_code == 500
        assert response.json() == {"status_code": 500, "detail": "Internal Server Error"}
        _no_secrets(response)
        assert [r.levelno for r in answers_log] == [logging.ERROR]
        assert all(SECRET not in r.getMessage() for r in answers_log)


def test_repository_errors_keep_their_answers_without_values(
    client: TestClient[Litestar], backend: str
) -> None:
    assert client.post("/widgets").status_code == 201
    duplicate = client.post("/widgets")
    assert duplicate.status_code == 409
    assert duplicate.json()["extra"]["constraint_kind"] == "unique"
    _no_secrets(duplicate)
    missing = client.get("/widgets/12345")  # advanced-alchemy's own answer: 404
    assert missing.status_code == 404


def test_an_error_that_is_not_from_the_database_keeps_its_500(
    client: TestClient[Litestar],
) -> None:
    response = client.get("/not-database")
    assert response.status_code == 500
    assert "retry-after" not in response.headers
    _no_secrets(response)


def test_the_apps_own_handlers_win(tmp_path: Path) -> None:
    url = backend_url("sqlite_file", tmp_path)  # the layering does not depend on the database
    asyncio.run(_setup(url, "sqlite"))

    def conflict(_: Request[Any, Any, Any], exc: Exception) -> Response[str]:
        return Response("mine", status_code=422)

    def anything(_: Request[Any, Any, Any], exc: Exception) -> Response[str]:
        return Response("all mine", status_code=418)

    app = _app(url, exception_handlers={IntegrityError: conflict})
    with TestClient(app) as client:
        client.post("/items/1")
        assert (client.post("/items/2").status_code, client.post("/items/2").text) == (422, "mine")
        assert client.get("/broken-sql").status_code == 500  # ours still answers the rest
    app = _app(url, exception_handlers={SQLAlchemyError: anything})
    with TestClient(app) as client:
        assert client.get("/broken-sql").status_code == 418


def test_hidden_parameters_stay_out_of_error_messages(backend: str, tmp_path: Path) -> None:
    url = backend_url(backend, tmp_path)
    asyncio.run(_setup(url, database_kind(backend)))

    async def duplicate(hide: bool) -> str:
        engine = create_async_engine_from_config(DatabaseConfig(url=url, hide_parameters=hide))
        try:
            for _ in range(2):
                async with engine.begin() as connection:
                    await connection.execute(INSERT, {"id": 7, "e": EMAIL, "o": None, "s": 0})
        except IntegrityError as exc:
            return str(exc)
        finally:
            await engine.dispose()
        raise AssertionError("expected a duplicate")

    assert EMAIL not in asyncio.run(duplicate(True))
    assert EMAIL in asyncio.run(duplicate(False))  # the switch really is the difference


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_database_that_is_down_is_503_with_retry_after(
    kind: str, answers_log: list[logging.LogRecord]
) -> None:
    target = DatabaseConfig(url=require_server(kind)).sqlalchemy_url
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 0)
    proxy.on()
    url = target.set(port=proxy.port).render_as_string(hide_password=False)
    try:
        with TestClient(_app(url)) as client:
            assert client.get("/read").status_code == 200
            proxy.off()  # cuts the pooled connections, refuses new ones
            answers_log.clear()
            for _ in range(3):
                response = client.get("/read")
                assert response.status_code == 503
                assert response.headers["retry-after"] == "7"
                assert response.json()["status_code"] == 503
                _no_secrets(response)
            assert [r.levelno for r in answers_log] == [logging.WARNING] * 3
            proxy.on()
            assert client.get("/read").status_code == 200
    finally:
        proxy.close()


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_statement_over_its_time_limit_is_503(kind: str) -> None:
    with TestClient(_app(require_server(kind))) as client:
        response = client.get("/slow")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_stalled_network_is_503_within_the_time_limits(kind: str) -> None:
    target = DatabaseConfig(url=require_server(kind)).sqlalchemy_url
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 0)
    proxy.on()
    url = target.set(port=proxy.port).render_as_string(hide_password=False)
    database = DatabaseConfig(
        url=url, pool_size=1, max_overflow=0, command_timeout=1.0, pool_timeout=1.0,
        connect_timeout=1.0, pool_pre_ping=False,
    )  # fmt: skip
    app = Litestar(route_handlers=HANDLERS, plugins=[DatabasePlugin(database)])
    try:
        with TestClient(app) as client:
            assert client.get("/read").status_code == 200
            proxy.stall()  # packets vanish: no FIN, no RST
            loop = asyncio.new_event_loop()
            started = loop.time()
            response = client.get("/read")
            waited = loop.time() - started
            loop.close()
            assert response.status_code == 503
            assert "retry-after" in response.headers
            assert waited < 2.0 + 1.0  # command_timeout + pool_timeout, plus slack
            proxy.on()
    finally:
        proxy.close()


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_an_exhausted_pool_is_503(kind: str) -> None:
    database = DatabaseConfig(
        url=require_server(kind), pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    app = Litestar(route_handlers=HANDLERS, plugins=[DatabasePlugin(database)])
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # concurrent requests, in this loop
    async with AsyncTestClient(app), httpx.AsyncClient(transport=transport) as client:
        holding = asyncio.ensure_future(client.get("http://test/hold"))
        await asyncio.sleep(0.3)
        response = await client.get("http://test/read")
        assert (await holding).status_code == 200
    assert response.status_code == 503
    assert "retry-after" in response.headers


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_retried_unit_of_work_whose_attempts_run_out_is_503(kind: str) -> None:
    url = require_server(kind)
    asyncio.run(_setup(url, kind))

    async def lock_and_call(client: TestClient[Litestar]) -> Any:
        engine = create_async_engine_from_config(DatabaseConfig(url=url))
        try:
            async with engine.begin() as holder:
                await holder.execute(text("SELECT id FROM bento_owner WHERE id = 1 FOR UPDATE"))
                return await asyncio.to_thread(client.post, "/locked")
        finally:
            await engine.dispose()

    with TestClient(_app(url)) as client:
        response = asyncio.run(lock_and_call(client))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"


async def test_a_session_the_server_ended_never_goes_back_into_the_pool() -> None:
    """idle_in_transaction_session_timeout ends sessions mid-request; later requests work."""
    database = DatabaseConfig(url=require_server("postgresql"), pool_size=4, max_overflow=0)
    app = Litestar(route_handlers=HANDLERS, plugins=[DatabasePlugin(database)])
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with AsyncTestClient(app), httpx.AsyncClient(transport=transport) as client:
        for round_ in range(6):
            blocking = "true" if round_ % 2 else "false"
            ended = await asyncio.gather(
                *(client.get(f"http://t/idle-in-transaction?blocking={blocking}") for _ in range(4))
            )
            assert {r.status_code for r in ended} == {503}
            reads = await asyncio.gather(*(client.get("http://t/read") for _ in range(8)))
            assert [r.status_code for r in reads] == [200] * 8
