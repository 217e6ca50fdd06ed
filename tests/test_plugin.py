"""The Litestar plugin with Litestar's test client, on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from litestar import Litestar, Response, get, post
from litestar.exceptions import LitestarException
from litestar.params import FromPath
from litestar.response import Stream
from litestar.testing import TestClient
from sqlalchemy import Engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from litestar_bento_db import (
    DatabaseConfig,
    DatabasePlugin,
    DbEngine,
    DbSession,
    DbSessionFactory,
    HealthConfig,
    create_async_engine_from_config,
)
from litestar_bento_db.litestar.transaction import RequestSessionClosedError
from tests.conftest import backend_url, database_kind


class NoteBase(DeclarativeBase):
    pass


class Note(NoteBase):
    __tablename__ = "bento_note"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(nullable=True)


SCHEMA = {
    "postgresql": [
        "DROP TABLE IF EXISTS bento_note",
        "DROP TABLE IF EXISTS bento_parent",
        "CREATE TABLE bento_parent (id int PRIMARY KEY)",
        "CREATE TABLE bento_note (id int PRIMARY KEY, parent_id int NULL REFERENCES "
        "bento_parent (id) DEFERRABLE INITIALLY DEFERRED)",
    ],
    "mysql": [
        "DROP TABLE IF EXISTS bento_note",
        "DROP TABLE IF EXISTS bento_parent",
        "CREATE TABLE bento_parent (id int PRIMARY KEY) ENGINE=InnoDB",
        "CREATE TABLE bento_note (id int PRIMARY KEY, parent_id int NULL, "
        "FOREIGN KEY (parent_id) REFERENCES bento_parent (id)) ENGINE=InnoDB",
    ],
    "sqlite": [
        "DROP TABLE IF EXISTS bento_note",
        "DROP TABLE IF EXISTS bento_parent",
        "CREATE TABLE bento_parent (id int PRIMARY KEY)",
        "CREATE TABLE bento_note (id int PRIMARY KEY, parent_id int NULL REFERENCES "
        "bento_parent (id) DEFERRABLE INITIALLY DEFERRED)",
    ],
}


@post("/notes/{note_id:int}")
async def create_note(db_session: DbSession, note_id: FromPath[int]) -> dict[str, int]:
    await db_session.execute(text("INSERT INTO bento_note (id) VALUES (:id)"), {"id": note_id})
    return {"id": note_id}


@post("/notes/{note_id:int}/fail")
async def create_then_fail(db_session: DbSession, note_id: FromPath[int]) -> None:
    await db_session.execute(text("INSERT INTO bento_note (id) VALUES (:id)"), {"id": note_id})
    raise RuntimeError("handler failed after writing")


@post("/notes/{note_id:int}/reject")
async def create_then_reject(
    db_session: DbSession, note_id: FromPath[int]
) -> Response[dict[str, str]]:
    await db_session.execute(text("INSERT INTO bento_note (id) VALUES (:id)"), {"id": note_id})
    return Response({"detail": "conflict"}, status_code=409)


@post("/notes/{note_id:int}/orphan")
async def create_orphan(db_session: DbSession, note_id: FromPath[int]) -> dict[str, int]:
    """Violates a deferred foreign key: fails only at COMMIT."""
    await db_session.execute(
        text("INSERT INTO bento_note (id, parent_id) VALUES (:id, 999)"), {"id": note_id}
    )
    return {"id": note_id}


@post("/notes/{note_id:int}/orphan-stream")
async def create_orphan_streamed(db_session: DbSession, note_id: FromPath[int]) -> Stream:
    """The deferred foreign key fails at COMMIT; the handler's body is streamed in parts."""
    await db_session.execute(
        text("INSERT INTO bento_note (id, parent_id) VALUES (:id, 999)"), {"id": note_id}
    )

    async def parts() -> Any:
        for part in (b"handler ", b"body ", b"parts"):
            yield part

    return Stream(parts())


@get("/notes/checked-out")
async def checked_out_while_answering(db_session: DbSession, db_engine: DbEngine) -> Stream:
    """Report, while the body is sent, how many connections the pool has out."""
    await db_session.execute(text("SELECT 1"))
    pool: Any = db_engine.pool

    async def body() -> Any:
        yield str(pool.checked_out_count()).encode()

    return Stream(body())


@post("/notes/{note_id:int}/lose-commit")
async def create_and_lose_connection(
    db_session: DbSession, db_engine: DbEngine, note_id: FromPath[int]
) -> dict[str, int]:
    """Kill our own server connection after the write: the COMMIT fails."""
    await db_session.execute(text("INSERT INTO bento_note (id) VALUES (:id)"), {"id": note_id})
    postgres = db_engine.dialect.name == "postgresql"
    who = "SELECT pg_backend_pid()" if postgres else "SELECT CONNECTION_ID()"
    victim = (await db_session.execute(text(who))).scalar_one()
    async with db_engine.connect() as admin:
        kill = "SELECT pg_terminate_backend(:id)" if postgres else "KILL :id"
        await admin.execute(text(kill), {"id": victim})
    await asyncio.sleep(0.2)
    return {"id": note_id}


@post("/notes/{note_id:int}/write-in-stream")
async def write_in_stream(db_session: DbSession, note_id: FromPath[int]) -> Stream:
    """Uses the request's session after the response started: refused."""

    async def body() -> Any:
        yield b"writing "
        await db_session.execute(text("INSERT INTO bento_note (id) VALUES (:id)"), {"id": note_id})
        yield b"done"

    return Stream(body())


@post("/notes/{note_id:int}/add-in-stream")
async def add_in_stream(db_session: DbSession, note_id: FromPath[int]) -> Stream:
    """Adds an object to the request's session after the response started: refused."""

    async def body() -> Any:
        yield b"adding "
        db_session.add(Note(id=note_id))
        yield b"done"

    return Stream(body())


@post("/notes/{note_id:int}/unit-of-work-in-stream")
async def unit_of_work_in_stream(
    db_session_factory: DbSessionFactory, note_id: FromPath[int]
) -> Stream:
    """The way to write from a streamed body: its own unit of work."""

    async def body() -> Any:
        yield b"writing "
        async with db_session_factory() as session, session.begin():
            await session.execute(text("INSERT INTO bento_note (id) VALUES (:id)"), {"id": note_id})
        yield b"done"

    return Stream(body())


@get("/no-session", sync_to_thread=False)
def no_session() -> dict[str, str]:
    return {"db": "untouched"}


HANDLERS = [
    create_note,
    create_then_fail,
    create_then_reject,
    create_orphan,
    create_orphan_streamed,
    checked_out_while_answering,
    create_and_lose_connection,
    write_in_stream,
    add_in_stream,
    unit_of_work_in_stream,
    no_session,
]


async def _setup(url: str, kind: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=url))
    async with engine.begin() as connection:
        for statement in SCHEMA[kind]:
            await connection.execute(text(statement))
    await engine.dispose()


@pytest.fixture
def app_url(backend: str, tmp_path: Path) -> str:
    url = backend_url(backend, tmp_path)
    if backend == "sqlite_memory":
        # one engine per app: the test reads through the app's own engine below
        return url
    asyncio.run(_setup(url, database_kind(backend)))
    return url


@pytest.fixture
def client(app_url: str, backend: str) -> Iterator[TestClient[Litestar]]:
    plugin = DatabasePlugin(DatabaseConfig(url=app_url, pool_size=3))
    app = Litestar(route_handlers=HANDLERS, plugins=[plugin])
    with TestClient(app) as test_client:
        if backend == "sqlite_memory":
            test_client.blocking_portal.call(_create_schema, plugin, "sqlite")
        yield test_client


async def _create_schema(plugin: DatabasePlugin, kind: str) -> None:
    assert plugin.runtime.engine is not None
    async with plugin.runtime.engine.begin() as connection:
        for statement in SCHEMA[kind]:
            await connection.execute(text(statement))


async def _ids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT id FROM bento_note ORDER BY id"))
        return [int(row[0]) for row in result]


def ids(client: TestClient[Litestar]) -> list[int]:
    plugin = client.app.plugins.get(DatabasePlugin)
    assert plugin.runtime.engine is not None
    return client.blocking_portal.call(_ids, plugin.runtime.engine)


def test_session_is_injected_and_committed(client: TestClient[Litestar]) -> None:
    assert client.post("/notes/1").status_code == 201
    assert client.post("/notes/2").json() == {"id": 2}
    assert ids(client) == [1, 2]


def test_failing_handler_rolls_back(client: TestClient[Litestar]) -> None:
    assert client.post("/notes/1/fail").status_code == 500
    assert ids(client) == []


def test_error_status_rolls_back(client: TestClient[Litestar]) -> None:
    assert client.post("/notes/1/reject").status_code == 409
    assert ids(client) == []


def test_commit_builds_no_engine(client: TestClient[Litestar]) -> None:
    # advanced-alchemy's listeners would call Engine.execution_options() on every commit
    with mock.patch.object(
        Engine, "execution_options", autospec=True, side_effect=Engine.execution_options
    ) as execution_options:
        assert client.post("/notes/3").status_code == 201
    assert execution_options.call_count == 0
    assert ids(client) == [3]


def test_handler_without_session_checks_out_no_connection(client: TestClient[Litestar]) -> None:
    plugin = client.app.plugins.get(DatabasePlugin)
    assert plugin.runtime.engine is not None
    checkouts: list[object] = []
    listener = lambda *args: checkouts.append(args)  # noqa: E731
    event.listen(plugin.runtime.engine.sync_engine, "checkout", listener)
    try:
        for _ in range(5):
            assert client.get("/no-session").json() == {"db": "untouched"}
        assert checkouts == []
        client.post("/notes/7")
        assert len(checkouts) == 1
    finally:
        event.remove(plugin.runtime.engine.sync_engine, "checkout", listener)


def test_commit_time_failure_is_an_error_status(
    client: TestClient[Litestar], backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    if backend == "mysql":
        # MariaDB has no deferred constraints: lose the connection before COMMIT instead
        response = client.post("/notes/5/lose-commit")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert "outcome is unknown" in response.json()["detail"]
    else:
        # a foreign key the client's input violated: 409 naming it, never the values
        response = client.post("/notes/5/orphan")
        assert response.status_code == 409
        assert "retry-after" not in response.headers
        body = response.json()
        assert body["extra"]["constraint_kind"] == "foreign_key"
        assert "foreign key constraint" in body["detail"]
        assert "999" not in response.text
        if backend == "postgresql":
            assert body["extra"]["constraint"] == "bento_note_parent_id_fkey"
    assert ids(client) == []
    failures = [r for r in caplog.records if "at COMMIT" in r.message]
    assert len(failures) == 1


@pytest.mark.parametrize("backend", ["postgresql", "sqlite_file"])
def test_failed_commit_replaces_a_streamed_body(client: TestClient[Litestar]) -> None:
    response = client.post("/notes/8/orphan-stream")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert b"handler" not in response.content
    assert response.json()["status_code"] == 409
    assert ids(client) == []


@pytest.mark.parametrize("backend", ["postgresql", "sqlite_file"])
def test_the_request_session_refuses_work_after_the_response_started(
    client: TestClient[Litestar],
) -> None:
    for path in ("/notes/9/write-in-stream", "/notes/9/add-in-stream"):
        with pytest.raises(LitestarException, match="after response started") as caught:
            client.post(path)  # the response is cut short: no silent 200
        cause = caught.value.__cause__ or caught.value.__context__
        assert isinstance(cause, BaseExceptionGroup)  # Litestar streams from a task group
        (error,) = cause.exceptions
        assert isinstance(error, RequestSessionClosedError)
        assert "db_session_factory" in str(error)
    assert ids(client) == []  # nothing half-written, nothing left uncommitted
    plugin = client.app.plugins.get(DatabasePlugin)
    assert plugin.runtime.engine is not None
    assert plugin.runtime.pool_figures()["pool_checked_out"] == 0  # no connection leaked
    response = client.post("/notes/10/unit-of-work-in-stream")
    assert (response.status_code, response.text) == (201, "writing done")
    assert ids(client) == [10]


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_connection_is_back_in_the_pool_when_the_response_starts(
    client: TestClient[Litestar],
) -> None:
    assert client.get("/notes/checked-out").text == "0"


@pytest.mark.parametrize("backend", ["postgresql"])
def test_connection_lost_at_commit_on_postgresql(client: TestClient[Litestar]) -> None:
    response = client.post("/notes/6/lose-commit")
    assert response.status_code == 503
    assert ids(client) == []


def test_health_routes(client: TestClient[Litestar]) -> None:
    for path in ("/health/liveness", "/health/readiness", "/health"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/health+json"
        assert response.json() == {"status": "pass"}


def _details_app(url: str, **health: Any) -> Litestar:
    plugin = DatabasePlugin(DatabaseConfig(url=url), health=HealthConfig(details=True, **health))
    return Litestar(route_handlers=[no_session], plugins=[plugin])


def test_health_details_only_when_enabled_and_without_secrets(app_url: str) -> None:
    with TestClient(_details_app(app_url, path="/api/v1/common/health")) as client:
        client.get("/api/v1/common/health/readiness")
        body = client.get("/api/v1/common/health").json()
    assert body["status"] == "pass"
    latency = body["checks"]["database:responseTime"][0]
    assert latency["observedUnit"] == "ms"
    assert latency["observedValue"] is not None
    assert "pool_checked_out" in body["checks"]["database:connections"][0]
    text_ = str(body)
    for secret in ("127.0.0.1", "root", "postgres@", "password"):
        assert secret not in text_


def test_health_details_can_be_guarded(app_url: str) -> None:
    from litestar.exceptions import NotAuthorizedException

    def deny(*_: Any) -> None:
        raise NotAuthorizedException()

    with TestClient(_details_app(app_url, guards=[deny])) as client:
        assert client.get("/health").status_code == 401
        assert client.get("/health/readiness").status_code == 200
        assert client.get("/health/liveness").status_code == 200


background: set[asyncio.Task[None]] = set()


@post("/notes/{note_id:int}/later", status_code=202)
async def write_later(db_engine: DbEngine, note_id: FromPath[int]) -> None:
    """Hold a connection past the response: only a drain before dispose waits for it."""

    async def work() -> None:
        async with db_engine.begin() as connection:
            await connection.execute(
                text("INSERT INTO bento_note (id) VALUES (:id)"), {"id": note_id}
            )
            await asyncio.sleep(0.5)

    task = asyncio.ensure_future(work())
    background.add(task)
    task.add_done_callback(background.discard)
    await asyncio.sleep(0.05)  # the connection is checked out before we answer


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_shutdown_drains_before_the_engine_is_disposed(app_url: str) -> None:
    plugin = DatabasePlugin(DatabaseConfig(url=app_url), drain_timeout=5)
    app = Litestar(route_handlers=[write_later], plugins=[plugin])
    with TestClient(app) as client:
        assert client.post("/notes/9/later").status_code == 202
        engine = plugin.runtime.engine
        assert engine is not None
    # leaving the client ran the lifespan shutdown: our drain, then advanced-alchemy's dispose
    stats = plugin.runtime.drain_stats
    assert stats is not None
    assert stats["connections_at_start"] == 1  # it saw the connection: the pool was still ours
    assert stats["success"] is True
    assert stats["time_taken"] >= 0.3
    assert plugin.runtime.phase == "stopped"

    async def committed() -> list[int]:
        engine = create_async_engine_from_config(DatabaseConfig(url=app_url))
        try:
            return await _ids(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(committed()) == [9]


def test_health_routes_pass_authentication_middleware(app_url: str) -> None:
    from litestar.connection import ASGIConnection
    from litestar.exceptions import NotAuthorizedException
    from litestar.middleware import (
        AbstractAuthenticationMiddleware,
        AuthenticationResult,
        DefineMiddleware,
    )

    class RejectEveryone(AbstractAuthenticationMiddleware):
        async def authenticate_request(
            self, connection: ASGIConnection[Any, Any, Any, Any]
        ) -> AuthenticationResult:
            raise NotAuthorizedException()

    app = Litestar(
        route_handlers=[no_session],
        plugins=[DatabasePlugin(DatabaseConfig(url=app_url))],
        middleware=[DefineMiddleware(RejectEveryone)],
    )
    with TestClient(app) as client:
        assert client.get("/no-session").status_code == 401
        for path in ("/health", "/health/liveness", "/health/readiness"):
            assert client.get(path).status_code == 200


def test_start_up_s_objects_are_frozen_until_shutdown_unless_turned_off(tmp_path: Path) -> None:
    import gc

    url = f"sqlite+aiosqlite:///{tmp_path / 'gc.db'}"
    gc.unfreeze()
    try:
        with TestClient(Litestar([no_session], plugins=[DatabasePlugin(DatabaseConfig(url=url))])):
            assert gc.get_freeze_count() > 1000
        assert gc.get_freeze_count() == 0  # unfrozen at shutdown
        plugin = DatabasePlugin(DatabaseConfig(url=url), freeze_gc=False)
        with TestClient(Litestar([no_session], plugins=[plugin])):
            assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("backend", ["sqlite_file"])
def test_an_answer_replaced_at_commit_keeps_the_apps_headers(app_url: str) -> None:
    from litestar.config.cors import CORSConfig

    cors = CORSConfig(allow_origins=["https://shop.example"])
    plugin = DatabasePlugin(DatabaseConfig(url=app_url))
    app = Litestar(route_handlers=HANDLERS, plugins=[plugin], cors_config=cors)
    with TestClient(app) as client:
        response = client.post("/notes/5/orphan", headers={"origin": "https://shop.example"})
    assert response.status_code == 409  # the deferred foreign key failed at COMMIT
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["content-type"] == "application/json"
