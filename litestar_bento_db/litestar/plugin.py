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

from collections.abc import Collection, Mapping
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemyInitPlugin,
    SQLAlchemyPlugin,
)
from litestar.datastructures import State
from litestar.di import Dependency, Provide
from litestar.plugins import CLIPlugin, InitPluginProtocol
from litestar.types import Scope
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from litestar_bento_db.config import ConfigError, DatabaseConfig, mask_url
from litestar_bento_db.litestar.adopt import Adopted, adopt
from litestar_bento_db.litestar.alchemy import other_configs, take_over
from litestar_bento_db.litestar.cli import add_cli_commands
from litestar_bento_db.litestar.config import PluginConfig
from litestar_bento_db.litestar.errors import database_exception_handlers
from litestar_bento_db.litestar.health import create_health_router, taken_health_path
from litestar_bento_db.litestar.metrics import add_metrics, name_requests
from litestar_bento_db.litestar.runtime import DatabaseRuntime
from litestar_bento_db.litestar.transaction import TransactionHandler

if TYPE_CHECKING:
    from click import Group
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


def _session_config(options: Mapping[str, Any], info: Mapping[str, Any]) -> AsyncSessionConfig:
    """The request sessions' settings: the plugin's, with the app's ``session_options``.

    ``info`` is what the config put in ``Session.info`` itself (advanced-alchemy's
    ``file_object_raise_on_error``).
    """
    settings: dict[str, Any] = {"expire_on_commit": False, "autoflush": True, **options}
    # advanced-alchemy's cache and file-object listeners look these up on every commit and
    # flush, and without them build a new engine each time (Engine.execution_options()) to
    # read its options; our engine sets none. tests/test_upstream_pins.py checks that these
    # keys are still read. Each flush then sets the file-object one to what it needs
    # (file_objects.py).
    settings["info"] = {
        **info,
        **options.get("info", {}),
        "enable_cache_listener": True,
        "enable_file_object_listener": True,
    }
    return AsyncSessionConfig(**settings)


class DatabasePlugin(InitPluginProtocol, CLIPlugin):
    """Production database layer for a Litestar app.

    Args:
        config: A :class:`PluginConfig`, or just a :class:`DatabaseConfig`; by default
            everything comes from the ``DB_*`` environment. Or the app's own
            advanced-alchemy ``SQLAlchemyAsyncConfig``, in place of
            ``SQLAlchemyPlugin(config=...)``: the plugin runs that same object (the app's
            code holding it keeps working, on the plugin's engine) and takes its URL,
            engine and session settings, keys, Alembic settings, ``create_all`` and
            ``before_send_handler`` choice (see :mod:`litestar_bento_db.litestar.adopt`).
        **options: :class:`PluginConfig` fields, when ``config`` is not a
            ``PluginConfig`` (``fail_fast=True``, ``health=HealthConfig(...)``, ...).
    """

    def __init__(
        self,
        config: PluginConfig | DatabaseConfig | SQLAlchemyAsyncConfig | None = None,
        **options: Any,
    ) -> None:
        commit_statuses: Collection[int] | None = None
        adopted: Adopted | None = None
        if isinstance(config, PluginConfig):
            if options:
                raise TypeError("pass options inside PluginConfig, or with a DatabaseConfig")
            self.config = config
        elif config is None or isinstance(config, DatabaseConfig):
            self.config = PluginConfig(database=config or DatabaseConfig(), **options)
        else:  # the app's own advanced-alchemy config (ConfigError if it is not one)
            adopted = adopt(config, options)
            self.config, commit_statuses = adopted.config, adopted.commit_statuses
        self.runtime = DatabaseRuntime(self.config)
        if adopted is not None:
            alchemy: SQLAlchemyAsyncConfig = adopted.alchemy
        else:
            alchemy = SQLAlchemyAsyncConfig(
                connection_string=self.config.database.url,
                session_dependency_key=self.config.session_dependency_key,
                engine_dependency_key=self.config.engine_dependency_key,
                alembic_config=self.config.alembic_config or AlembicAsyncConfig(),
            )
        if self.config.migrate_on_startup:
            # Alembic is imported only for it
            from litestar_bento_db.litestar.migrations import check_scripts, migrate_to_head

            check_scripts(alchemy)
            self.runtime.migrate = partial(
                migrate_to_head,
                alchemy,
                self.config.database,
                lock_timeout=self.config.migration_lock_timeout,
            )
        # nothing is refused past this point: the app's config may be changed
        info = alchemy.session_config.info
        alchemy.session_config = _session_config(
            self.config.session_options or {}, info if isinstance(info, Mapping) else {}
        )
        alchemy.create_all = False  # the runtime creates the tables once the database answers
        self.alchemy_config = take_over(alchemy, self.runtime)
        """The advanced-alchemy config the app runs on: the app's own when it gave one."""
        # our before-send hook in place of advanced-alchemy's: commit before the status
        self.alchemy_config.before_send_handler = TransactionHandler(
            session_scope_key=alchemy.session_scope_key,
            commit_on_redirect=self.config.commit_on_redirect,
            retry_after=self.config.health.retry_after,
            commit_statuses=commit_statuses,
        )

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add advanced-alchemy's plugin (with our commit hook) and the health routes."""
        if self.config.refuse_other_alchemy_configs:
            self._refuse_a_second_config(app_config)
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

    def _refuse_a_second_config(self, app_config: AppConfig) -> None:
        """Fail when the app has an advanced-alchemy config of its own beside ours.

        Its code would use that config's engine, sessions and app-state keys, which are
        not the plugin's: registered as a plugin, two engines serve one app; held
        elsewhere (the app's guards, jobs, services), its sessions are not the request's
        and its app-state keys are missing (advanced-alchemy renamed ours).
        """
        how = (
            "pass that config to the plugin instead: DatabasePlugin(alchemy_config), "
            "and drop SQLAlchemyPlugin (docs: Coming from advanced-alchemy); or, for a "
            "second database on purpose, DatabasePlugin(..., refuse_other_alchemy_configs=False)"
        )
        for plugin in app_config.plugins:
            if isinstance(plugin, SQLAlchemyPlugin | SQLAlchemyInitPlugin):
                raise ConfigError(
                    f"litestar-bento-db: the app registers advanced-alchemy's "
                    f"{type(plugin).__name__} beside DatabasePlugin; {how}"
                )
        others = other_configs()
        if others:
            raise ConfigError(
                f"litestar-bento-db: the process holds an advanced-alchemy "
                f"{type(others[0]).__name__} that is not the plugin's (connection "
                f"{mask_url(others[0].connection_string or '')!r}): code using it would not "
                f"reach the app's engine and sessions (advanced-alchemy even renames the "
                f"plugin's app-state keys for it); {how}"
            )

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
