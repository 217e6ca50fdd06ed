"""An app's own advanced-alchemy config passed to the plugin: the one-line swap of
``SQLAlchemyPlugin(config=alchemy)`` for ``DatabasePlugin(alchemy)``, on every database.

The app below is written the way advanced-alchemy apps are: its config object is a
module-level name that its guard (``alchemy.provide_session``), its service
(``Service.new(config=alchemy)``) and its jobs (``alchemy.get_session()``) use directly.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import pytest
from advanced_alchemy.config.routing import RoutingConfig
from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemyPlugin,
    SQLAlchemySyncConfig,
)
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from litestar import Litestar, Request, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromQuery
from litestar.response import Redirect
from litestar.testing import TestClient
from sqlalchemy import ForeignKey, MetaData, String, func, insert, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.pool import NullPool

from litestar_bento_db import ConfigError, DatabaseConfig, DatabasePlugin, DbEngine, DbSession
from litestar_bento_db.pool import LoopBoundPool
from tests.conftest import backend_url, records_of

# advanced-alchemy 1.10's own get_session() calls what it deprecated in 1.9 (lowest versions)
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated function 'set_async_context':DeprecationWarning"
)
BACKENDS = ["postgresql", "mysql", "sqlite_file"]
AnyRequest = Request[Any, Any, Any]


class Base(DeclarativeBase):
    metadata = MetaData()


class Owner(Base):
    __tablename__ = "bento_adopt_owner"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True, default="")


class Item(Base):
    __tablename__ = "bento_adopt_item"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    label: Mapped[str] = mapped_column(String(40), default="")
    owner_id: Mapped[int] = mapped_column(ForeignKey(Owner.id))
    owner: Mapped[Owner] = relationship()


class ItemService(SQLAlchemyAsyncRepositoryService[Item]):
    class Repo(SQLAlchemyAsyncRepository[Item]):
        model_type = Item

    repository_type = Repo


def make_app(alchemy: SQLAlchemyAsyncConfig, *, swap: bool = True, **options: Any) -> Litestar:
    """The app; ``swap`` False: as it was, on advanced-alchemy's plugin."""

    async def signed_in(connection: ASGIConnection[Any, Any, Any, Any], _: Any) -> None:
        # the guard uses the app's config object directly, as such apps' guards do
        session = alchemy.provide_session(connection.app.state, connection.scope)
        name = connection.headers.get("x-user", "")
        owner = await session.scalar(select(Owner).where(Owner.name == name))
        if owner is None:
            raise NotAuthorizedException("no such user")
        connection.state.owner = owner

    @post("/items", guards=[signed_in])
    async def add_item(
        request: Request[Any, Any, Any], db: DbSession, label: FromQuery[str]
    ) -> int:
        item = Item(label=label, owner=request.state.owner)  # loaded by the guard's session
        db.add(item)
        await db.flush()
        return item.id

    @post("/items/redirected", guards=[signed_in], status_code=303)
    async def add_then_redirect(request: AnyRequest, db: DbSession) -> Redirect:
        db.add(Item(label="redirected", owner=request.state.owner))
        return Redirect("/items", status_code=303)

    @get("/items")
    async def list_items() -> list[str]:
        async with ItemService.new(config=alchemy) as service:  # its own session
            return [item.label for item in await service.get_many(order_by=(Item.id, False))]

    plugin = DatabasePlugin(alchemy, **options) if swap else SQLAlchemyPlugin(config=alchemy)
    return Litestar([add_item, add_then_redirect, list_items], plugins=[plugin])


def config_for(url: str, **fields: Any) -> SQLAlchemyAsyncConfig:
    return SQLAlchemyAsyncConfig(
        connection_string=url,
        metadata=Base.metadata,
        bind_key="bento_adopt",  # advanced-alchemy's registry of metadata is per process
        create_all=True,
        session_dependency_key="db",
        engine_config=EngineConfig(pool_size=3, max_overflow=1, echo_pool=False),
        session_config=AsyncSessionConfig(expire_on_commit=False),
        **fields,
    )


async def _reset(url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
            await connection.run_sync(Base.metadata.create_all)
            await connection.execute(insert(Owner), [{"id": 1, "name": "ann"}])
    finally:
        await engine.dispose()


@pytest.fixture
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = backend_url(request.param, tmp_path)
    await _reset(url)
    return url


def _labels(client: TestClient[Litestar]) -> list[str]:
    response = client.get("/items")
    assert response.status_code == 200, response.text
    return list(response.json())


@pytest.mark.parametrize("url", BACKENDS, indirect=True)
def test_the_one_line_swap_keeps_the_apps_own_config_working(url: str) -> None:
    alchemy = config_for(url, before_send_handler="autocommit")
    app = make_app(alchemy)
    plugin = next(p for p in app.plugins.init if isinstance(p, DatabasePlugin))
    assert plugin.alchemy_config is alchemy  # the same object, not a copy
    with TestClient(app) as client:
        # the guard's session is the handler's: the owner it loaded is attached to it
        response = client.post("/items", params={"label": "first"}, headers={"x-user": "ann"})
        assert response.status_code == 201, response.text
        assert client.post("/items", params={"label": "x"}).status_code == 401
        assert _labels(client) == ["first"]  # committed, read through the app's service
        # the plugin's health routes; the app's engine is the plugin's, tuned as asked
        assert client.get("/health/readiness").status_code == 200
        engine = alchemy.get_engine()
        assert engine is plugin.runtime.engine
        if not url.startswith("sqlite"):  # a SQLite file is not pooled
            assert isinstance(engine.pool, LoopBoundPool)
            assert (engine.pool.size(), plugin.config.database.max_overflow) == (3, 1)

        async def job() -> int | None:  # a background job on the app's own config
            async with alchemy.get_session() as session:
                assert session.bind is engine
                return await session.scalar(select(func.count()).select_from(Item))

        with client.portal() as portal:
            assert portal.call(job) == 1
    assert plugin.config.session_dependency_key == "db"
    assert plugin.config.alembic_config is alchemy.alembic_config


@pytest.mark.parametrize("url", ["postgresql"], indirect=True)
def test_the_same_app_runs_on_advanced_alchemys_plugin(url: str) -> None:
    """The baseline: the app as it was, before the swap (tests/test_from_advanced_alchemy.py
    compares the answers of both plugins)."""
    alchemy = config_for(url, before_send_handler="autocommit")
    # advanced-alchemy's lifespan does not dispose its engine when its keys were renamed
    # (another config of the process holds them): without a pool, nothing is left open
    alchemy.engine_config = EngineConfig(poolclass=NullPool)
    with TestClient(make_app(alchemy, swap=False)) as client:
        response = client.post("/items", params={"label": "first"}, headers={"x-user": "ann"})
        assert response.status_code == 201, response.text
        assert _labels(client) == ["first"]


@pytest.mark.parametrize("url", BACKENDS, indirect=True)
@pytest.mark.parametrize(
    ("handler", "committed"),
    [
        (None, []),  # advanced-alchemy's default: the app commits itself
        ("autocommit", ["plain"]),
        ("autocommit_include_redirects", ["plain", "redirected"]),
    ],
)
def test_the_apps_before_send_handler_choice_is_kept(
    url: str, handler: str | None, committed: list[str]
) -> None:
    with TestClient(make_app(config_for(url, before_send_handler=handler))) as client:
        ann = {"x-user": "ann"}
        assert client.post("/items", params={"label": "plain"}, headers=ann).status_code == 201
        response = client.post("/items/redirected", headers=ann, follow_redirects=False)
        assert response.status_code == 303
        assert _labels(client) == committed


def test_a_database_down_at_startup_answers_503_not_500() -> None:
    alchemy = config_for("postgresql+asyncpg://postgres@127.0.0.1:1/test")
    with TestClient(make_app(alchemy, startup_retry_max_delay=0.2)) as client:
        response = client.get("/items")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert client.get("/health/readiness").status_code == 503


def test_engine_and_session_settings_are_read_and_the_unused_named(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    alchemy = SQLAlchemyAsyncConfig(
        connection_string=url,
        engine_config=EngineConfig(
            pool_size=2,
            pool_timeout=4,
            poolclass=NullPool,
            connect_args={"timeout": 3},
            query_cache_size=50,
        ),
        session_config=AsyncSessionConfig(autoflush=False, twophase=False),
    )
    with records_of("litestar_bento_db.litestar") as records:
        plugin = DatabasePlugin(alchemy)
    database = plugin.config.database
    assert (database.pool_size, database.pool_timeout, database.pooling) == (2, 4, False)
    assert database.engine_options == {"query_cache_size": 50}
    assert plugin.config.session_options is not None
    assert plugin.config.session_options["autoflush"] is False
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "engine_config.connect_args, session_config.twophase" in warnings[0]


def test_what_cannot_be_adopted_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(ConfigError, match="sync config"):
        DatabasePlugin(SQLAlchemySyncConfig(connection_string="sqlite:///x.db"))  # type: ignore[arg-type]
    made = SQLAlchemyAsyncConfig(connection_string=url)
    made.get_engine()
    with pytest.raises(ConfigError, match="already has an engine"):
        DatabasePlugin(made)

    async def own_handler(message: Any, scope: Any) -> None:
        return None

    with pytest.raises(ConfigError, match=r"before_send_handler: .*'autocommit'"):
        DatabasePlugin(
            SQLAlchemyAsyncConfig(connection_string=url, before_send_handler=own_handler)
        )
    with pytest.raises(ConfigError, match=r"set alembic_config .* on the config"):
        DatabasePlugin(SQLAlchemyAsyncConfig(connection_string=url), alembic_config=None)
    with pytest.raises(ConfigError, match="expected a PluginConfig"):
        DatabasePlugin(url)  # type: ignore[arg-type]
    # a refused config is left as it was
    kept = SQLAlchemyAsyncConfig(
        connection_string=url, create_all=True, before_send_handler=own_handler
    )
    with pytest.raises(ConfigError, match="before_send_handler"):
        DatabasePlugin(kept)
    assert (type(kept), kept.create_all) == (SQLAlchemyAsyncConfig, True)
    # one plugin per config
    given = SQLAlchemyAsyncConfig(connection_string=url)
    DatabasePlugin(given)
    with pytest.raises(ConfigError, match="given to a DatabasePlugin already"):
        DatabasePlugin(given)
    routed = SQLAlchemyAsyncConfig(routing_config=RoutingConfig(primary_connection_string=url))
    with pytest.raises(ConfigError, match="routing_config is not supported"):
        DatabasePlugin(routed)


def test_a_setting_given_twice_is_an_error_once_is_taken(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"

    def made(**engine: Any) -> SQLAlchemyAsyncConfig:
        return SQLAlchemyAsyncConfig(connection_string=url, engine_config=EngineConfig(**engine))

    with pytest.raises(ConfigError, match=r"pool_size: the config says 3 and database .* 7"):
        DatabasePlugin(made(pool_size=3), database=DatabaseConfig(url=url, pool_size=7))
    database = DatabasePlugin(
        made(pool_size=3), database=DatabaseConfig(url=url, command_timeout=5)
    ).config.database
    assert (database.pool_size, database.command_timeout) == (3, 5)

    def dumps(value: Any) -> str:
        return str(value)

    # advanced-alchemy's own JSON default yields to the database's choice
    plugin = DatabasePlugin(made(), database=DatabaseConfig(url=url, json_serializer=dumps))
    assert plugin.config.database.json_serializer is dumps


def test_what_the_plugin_replaces_is_named_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"

    class AppConfig(SQLAlchemyAsyncConfig):
        def provide_session(self, state: Any, scope: Any) -> Any:
            return super().provide_session(state, scope)

    with records_of("litestar_bento_db.litestar") as records:
        plugin = DatabasePlugin(
            AppConfig(connection_string=url, engine_config=EngineConfig(echo="debug"))
        )
    assert plugin.config.database.echo is True
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "AppConfig.provide_session() (the plugin's is used)" in warnings[0]
    assert "engine_config.echo='debug' (echo=True)" in warnings[0]


def test_other_configs_may_be_allowed(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    theirs = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(connection_string=url))
    ours = DatabasePlugin(DatabaseConfig(url=url), refuse_other_alchemy_configs=False)
    Litestar(plugins=[theirs, ours])
    del theirs
    gc.collect()


def test_a_second_advanced_alchemy_plugin_beside_ours_fails_at_startup(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    theirs = SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(connection_string=url))
    with pytest.raises(ConfigError, match="registers advanced-alchemy's SQLAlchemyPlugin beside"):
        Litestar(plugins=[theirs, DatabasePlugin(DatabaseConfig(url=url))])


def test_an_apps_config_held_beside_ours_fails_at_startup(tmp_path: Path) -> None:
    """The trap of the one-line swap done halfway: the app's own config object kept for
    its guards and jobs, and the plugin given only the URL."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    alchemy = SQLAlchemyAsyncConfig(connection_string=url)
    try:
        with pytest.raises(ConfigError, match=r"not the plugin's .*DatabasePlugin\(alchemy_config"):
            Litestar(plugins=[DatabasePlugin(DatabaseConfig(url=url))])
        # passed to the plugin, the same object is fine
        Litestar(plugins=[DatabasePlugin(alchemy)])
    finally:
        del alchemy
        gc.collect()


def test_a_config_another_app_serves_does_not_count(tmp_path: Path) -> None:
    """An older app on advanced-alchemy's plugin, still alive (a test suite's; Litestar
    2.23 keeps every app in a cache), is that app's business."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    other_app = Litestar(
        plugins=[SQLAlchemyPlugin(config=SQLAlchemyAsyncConfig(connection_string=url))]
    )
    Litestar(plugins=[DatabasePlugin(DatabaseConfig(url=url))])
    del other_app
    gc.collect()


def test_a_config_no_longer_referenced_does_not_count(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    dropped = SQLAlchemyAsyncConfig(connection_string=url)
    dropped.metadata = MetaData(info={"config": dropped})  # a cycle: freed by a collection
    del dropped
    Litestar(plugins=[DatabasePlugin(DatabaseConfig(url=url))])


def test_raw_statements_still_reach_the_plugins_engine(tmp_path: Path) -> None:
    """``db_engine`` is the plugin's engine for an adopted config too."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    alchemy = SQLAlchemyAsyncConfig(connection_string=url, engine_dependency_key="engine")

    @get("/one")
    async def one(engine: DbEngine) -> int:
        async with engine.connect() as connection:
            return int(await connection.scalar(text("SELECT 1")))

    app = Litestar([one], plugins=[DatabasePlugin(alchemy)])
    with TestClient(app) as client:
        assert client.get("/one").json() == 1


async def test_the_configs_alembic_settings_migrate_at_startup(tmp_path: Path) -> None:
    """``migrate_on_startup`` runs the adopted config's own Alembic settings (the example
    app's two revisions and its version table)."""
    from advanced_alchemy.extensions.litestar import AlembicAsyncConfig

    from example_app.app import MIGRATIONS

    url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    alchemy = SQLAlchemyAsyncConfig(
        connection_string=url,
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS), version_table_name="shop_alembic_version"
        ),
    )
    app = Litestar(plugins=[DatabasePlugin(alchemy, migrate_on_startup=True)])
    async with app.lifespan(), alchemy.get_session() as session:
        version = await session.scalar(text("SELECT version_num FROM shop_alembic_version"))
    assert version == "0002"


def test_the_database_cli_runs_on_the_adopted_config(tmp_path: Path) -> None:
    """``litestar database upgrade`` finds the app's own config (its Alembic settings)."""
    import contextlib
    import os
    import sqlite3
    import subprocess
    import sys

    from example_app.app import MIGRATIONS

    database = tmp_path / "app.db"
    (tmp_path / "cli_app.py").write_text(
        "from advanced_alchemy.extensions.litestar import AlembicAsyncConfig, "
        "SQLAlchemyAsyncConfig\n"
        "from litestar import Litestar\n"
        "from litestar_bento_db import DatabasePlugin\n"
        "alchemy = SQLAlchemyAsyncConfig(\n"
        f"    connection_string='sqlite+aiosqlite:///{database}',\n"
        f"    alembic_config=AlembicAsyncConfig(script_location={str(MIGRATIONS)!r}, "
        "version_table_name='shop_alembic_version'),\n"
        ")\n"
        "app = Litestar(plugins=[DatabasePlugin(alchemy)])\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}"}
    command = ["-m", "litestar", "--app", "cli_app:app", "database", "upgrade", "--no-prompt"]
    done = subprocess.run(
        [sys.executable, *command], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with contextlib.closing(sqlite3.connect(database)) as connection:  # (with alone: open)
        found = connection.execute("SELECT version_num FROM shop_alembic_version").fetchall()
    assert found == [("0002",)]
