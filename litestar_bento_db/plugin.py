"""The Litestar plugin: ``Litestar(plugins=[DatabasePlugin()])``.

It composes advanced-alchemy rather than replacing it: an ``SQLAlchemyPlugin`` is added
to the app with a config whose engine comes from our dialect engine, so
advanced-alchemy's session-per-request injection (``db_session``), repositories and its
``litestar database`` migration CLI keep working. On top of it the plugin adds what
production needs: the engine created in the serving loop with warm-up before ready,
commit before the response status, health routes, and a drain before the engine is
disposed at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemyPlugin,
)
from litestar.datastructures import State
from litestar.di import Dependency, Provide
from litestar.plugins import CLIPlugin, InitPluginProtocol
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from litestar_bento_db.config import DatabaseConfig
from litestar_bento_db.health import create_health_router
from litestar_bento_db.options import PluginConfig
from litestar_bento_db.runtime import DatabaseRuntime
from litestar_bento_db.transaction import TransactionHandler

if TYPE_CHECKING:
    from click import Group
    from litestar import Litestar
    from litestar.config.app import AppConfig

__all__ = ["DatabasePlugin", "DbEngine", "DbSession", "DbSessionFactory"]

DbSession: TypeAlias = Annotated[AsyncSession, Dependency(kind="named")]
"""``NamedDependency[AsyncSession]``: mark a handler's ``db_session`` parameter with it."""
DbEngine: TypeAlias = Annotated[AsyncEngine, Dependency(kind="named")]
"""``NamedDependency[AsyncEngine]``: mark a handler's ``db_engine`` parameter with it."""
DbSessionFactory: TypeAlias = Annotated[
    "async_sessionmaker[AsyncSession]", Dependency(kind="named")
]
"""``NamedDependency[async_sessionmaker]`` (``db_session_factory``): for units of work that
open their own session and transaction, such as retried use cases."""


@dataclass
class _AlchemyConfig(SQLAlchemyAsyncConfig):
    """advanced-alchemy's config, with our engine and our lifecycle inside its lifespan.

    Its lifespan disposes the engine when it exits, which happens before Litestar's
    ``on_shutdown`` hooks; running our drain inside it puts the drain first.
    """

    runtime: DatabaseRuntime | None = field(default=None, repr=False)

    def get_engine(self) -> AsyncEngine:
        assert self.runtime is not None
        if self.engine_instance is None:
            self.engine_instance = self.runtime.create_engine()
        return self.engine_instance

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncGenerator[None, None]:
        assert self.runtime is not None
        async with super().lifespan(app):  # app state: engine (created here), session maker
            await self.runtime.start()
            try:
                yield
            finally:
                await self.runtime.stop()  # then super() disposes the engine


class DatabasePlugin(InitPluginProtocol, CLIPlugin):
    """Production database layer for a Litestar app.

    Args:
        config: A :class:`PluginConfig`, or just a :class:`DatabaseConfig`; by default
            everything comes from the ``DB_*`` environment.
        **options: :class:`PluginConfig` fields, when ``config`` is a ``DatabaseConfig``
            or omitted (``fail_fast=True``, ``health=HealthConfig(...)``, ...).
    """

    def __init__(self, config: PluginConfig | DatabaseConfig | None = None, **options: Any) -> None:
        if isinstance(config, PluginConfig):
            if options:
                raise TypeError("pass options inside PluginConfig, or with a DatabaseConfig")
            self.config = config
        else:
            self.config = PluginConfig(database=config or DatabaseConfig(), **options)
        self.runtime = DatabaseRuntime(self.config)
        self.alchemy_config = _AlchemyConfig(
            connection_string=self.config.database.url,
            session_config=AsyncSessionConfig(
                expire_on_commit=False,
                autoflush=True,
                # advanced-alchemy's cache and file-object listeners look these up on
                # every commit and flush, and without them build a new engine each time
                # (Engine.execution_options()) to read its options; our engine sets none
                info={"enable_cache_listener": True, "enable_file_object_listener": True},
            ),
            session_dependency_key=self.config.session_dependency_key,
            engine_dependency_key=self.config.engine_dependency_key,
            create_all=False,
            runtime=self.runtime,
        )
        # our before-send hook in place of advanced-alchemy's: commit before the status
        self.alchemy_config.before_send_handler = TransactionHandler(
            session_scope_key=self.alchemy_config.session_scope_key,
            commit_on_redirect=self.config.commit_on_redirect,
            retry_after=self.config.health.retry_after,
        )

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add advanced-alchemy's plugin (with our commit hook) and the health routes."""
        app_config.plugins.append(SQLAlchemyPlugin(config=self.alchemy_config))
        if self.config.health.path is not None:
            app_config.route_handlers.append(create_health_router(self.runtime))
        app_config.dependencies[self.config.session_factory_dependency_key] = Provide(
            self._provide_session_factory, sync_to_thread=False
        )
        app_config.signature_namespace.update(
            {
                "DbSession": DbSession,
                "DbEngine": DbEngine,
                "DbSessionFactory": DbSessionFactory,
                "async_sessionmaker": async_sessionmaker,
            }
        )
        return app_config

    def _provide_session_factory(self, state: State) -> async_sessionmaker[AsyncSession]:
        factory: async_sessionmaker[AsyncSession] = state[
            self.alchemy_config.session_maker_app_state_key
        ]
        return factory

    def on_cli_init(self, cli: Group) -> None:
        """Add the ``bento-db`` commands (``check``, ``info``)."""
        from litestar_bento_db.cli import bento_db_group

        cli.add_command(bento_db_group)
