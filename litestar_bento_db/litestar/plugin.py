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

from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemyPlugin,
)
from litestar.datastructures import State
from litestar.di import Dependency, Provide
from litestar.plugins import CLIPlugin, InitPluginProtocol
from litestar.types import Scope
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from litestar_bento_db.config import ConfigError, DatabaseConfig
from litestar_bento_db.litestar.cli import add_cli_commands
from litestar_bento_db.litestar.config import PluginConfig
from litestar_bento_db.litestar.errors import database_exception_handlers
from litestar_bento_db.litestar.file_objects import track_files_only_when_stored
from litestar_bento_db.litestar.health import create_health_router, taken_health_path
from litestar_bento_db.litestar.metrics import add_metrics, name_requests
from litestar_bento_db.litestar.runtime import DatabaseRuntime
from litestar_bento_db.litestar.transaction import (
    TransactionHandler,
    refuse_after_response,
    request_session,
)
from litestar_bento_db.replicas import primary_only, route_reads, stick_to_primary

_READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

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
    primary_maker: async_sessionmaker[AsyncSession] | None = field(
        default=None, init=False, repr=False
    )
    """With replicas: the session maker whose sessions use the primary only."""

    def may_write(self, scope: Scope) -> bool:
        """Whether, with replicas, ``scope``'s request must use the primary throughout."""
        return self.primary_maker is not None and scope.get("method") not in _READ_ONLY_METHODS

    def get_engine(self) -> AsyncEngine:
        assert self.runtime is not None
        if self.engine_instance is None:
            self.engine_instance = self.runtime.create_engine()
        return self.engine_instance

    def provide_session(self, state: State, scope: Scope) -> AsyncSession:
        """The request's session, created on first use and kept for the before-send hook.

        With read replicas, a request that may write (any method but GET, HEAD and
        OPTIONS) uses the primary throughout: its reads see its own writes and no
        read-modify-write works from a lagging copy.
        """
        factory: async_sessionmaker[AsyncSession] = state[self.session_maker_app_state_key]
        session = request_session(scope, self.session_scope_key, factory)
        if self.may_write(scope):
            stick_to_primary(session)
        return session

    def create_session_maker(self) -> Callable[[], AsyncSession]:
        """advanced-alchemy's session maker, made for requests.

        Its sessions run advanced-alchemy's file-object tracking only in flushes that
        can store files, refuse work after the response started and, with replicas,
        route reads.
        """
        fresh = self.session_maker is None
        maker = super().create_session_maker()
        if fresh and isinstance(maker, async_sessionmaker):
            track_files_only_when_stored(maker)
            replicas = self.runtime.replicas if self.runtime is not None else None
            if replicas is not None:
                route_reads(maker, replicas)
            refuse_after_response(maker)
            if replicas is not None:
                self.primary_maker = primary_only(maker)
        return maker

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncGenerator[None, None]:
        assert self.runtime is not None
        async with super().lifespan(app):  # app state: engine (created here), session maker
            await self.runtime.start()
            try:
                yield
            finally:
                await self.runtime.stop()  # then super() disposes the engine


def _session_config(options: Mapping[str, Any]) -> AsyncSessionConfig:
    """The request sessions' settings: the plugin's, with the app's ``session_options``."""
    settings: dict[str, Any] = {"expire_on_commit": False, "autoflush": True, **options}
    # advanced-alchemy's cache and file-object listeners look these up on every commit and
    # flush, and without them build a new engine each time (Engine.execution_options()) to
    # read its options; our engine sets none. tests/test_upstream_pins.py checks that these
    # keys are still read. Each flush then sets the file-object one to what it needs
    # (file_objects.py).
    settings["info"] = {
        **options.get("info", {}),
        "enable_cache_listener": True,
        "enable_file_object_listener": True,
    }
    return AsyncSessionConfig(**settings)


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
            session_config=_session_config(self.config.session_options or {}),
            session_dependency_key=self.config.session_dependency_key,
            engine_dependency_key=self.config.engine_dependency_key,
            create_all=False,
            runtime=self.runtime,
            alembic_config=self.config.alembic_config or AlembicAsyncConfig(),
        )
        if self.config.migrate_on_startup:
            # Alembic is imported only for it
            from litestar_bento_db.litestar.migrations import check_scripts, migrate_to_head

            check_scripts(self.alchemy_config)
            self.runtime.migrate = partial(
                migrate_to_head,
                self.alchemy_config,
                self.config.database,
                lock_timeout=self.config.migration_lock_timeout,
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
        # before advanced-alchemy's plugin adds its own repository-error handler
        app_config.exception_handlers.update(
            database_exception_handlers(
                self.config.health.retry_after, app_config.exception_handlers
            )
        )
        health_path = self.config.health.path
        if health_path is not None:
            taken = taken_health_path(health_path, app_config.route_handlers)
            if taken is not None:
                raise ConfigError(
                    f"litestar-bento-db: the app already serves {taken}, a path of the "
                    f"database health routes (under {health_path!r}); mount them elsewhere "
                    "with DatabasePlugin(health=HealthConfig(path='/db/health')), or "
                    "HealthConfig(path=None) for none"
                )
            app_config.route_handlers.append(create_health_router(self.runtime))
        database = self.config.database
        add_metrics(app_config, self.config.metrics_path, enabled=database.metrics)
        if database.leak_detection_threshold > 0:
            app_config.middleware.append(name_requests)
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

    def _provide_session_factory(
        self, state: State, scope: Scope
    ) -> async_sessionmaker[AsyncSession]:
        config = self.alchemy_config
        if config.primary_maker is not None and config.may_write(scope):
            # a request that may write: its units of work use the primary throughout too
            return config.primary_maker
        factory: async_sessionmaker[AsyncSession] = state[config.session_maker_app_state_key]
        return factory

    def on_cli_init(self, cli: Group) -> None:
        """Add the ``bento-db`` commands (``check``, ``info``)."""
        add_cli_commands(cli, self.runtime.settings)
