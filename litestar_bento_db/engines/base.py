"""Per-dialect settings: what each database needs from SQLAlchemy and its driver.

A :class:`DialectSettings` subclass is not an engine: it turns a
:class:`~litestar_bento_db.DatabaseConfig` into the arguments of ``create_async_engine``
(the driver's connect arguments from its adapter, pool settings, statements for each
new connection) and builds the ``AsyncEngine`` from them. The arguments carry this
package's engine plugin, so an engine built from them by hand gets the same liveness
checks, error handling and metrics (:mod:`litestar_bento_db.instrumentation`). The
subclasses keep the names of the usage guide: ``PostgreSQLEngine``, ``MySQLEngine``,
``SQLiteEngine``.
"""

from __future__ import annotations

from abc import ABC
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from litestar_bento_db.config import ConfigError, DatabaseConfig, DatabaseType
from litestar_bento_db.drivers import DRIVERS, Driver
from litestar_bento_db.instrumentation import PLUGIN_NAME, SETTINGS_KWARG

__all__ = ["DialectSettings"]


class DialectSettings(ABC):
    """Engine settings for one kind of database, derived from a :class:`DatabaseConfig`.

    Subclasses say what their driver needs: connect arguments, pool settings, and
    statements to run on every new connection.
    """

    database_type: ClassVar[DatabaseType]
    """The kind of database this class configures."""
    supports_pool: ClassVar[bool] = True
    """Whether connections are pooled."""
    json_column_type: ClassVar[str] = "JSON"
    """The column type to use for JSON documents."""
    read_only_query: ClassVar[str | None] = None
    """A query answering true when the server refuses writes (a standby, read-only
    mode); readiness runs it in place of ``SELECT 1`` (None: no such state)."""
    checks_liveness: ClassVar[bool] = False
    """Whether pooled connections are checked by :mod:`litestar_bento_db.liveness` (in
    place of SQLAlchemy's ``pool_pre_ping``)."""

    def __init__(self, config: DatabaseConfig) -> None:
        if config.database_type != self.database_type:
            raise ConfigError(
                f"{type(self).__name__} configures {self.database_type}, "
                f"not {config.database_type} ({config.safe_url})"
            )
        self.config = config

    @property
    def driver(self) -> Driver:
        """The adapter of the URL's driver (:mod:`litestar_bento_db.drivers`)."""
        return DRIVERS[self.config.driver]

    def get_connect_args(self) -> dict[str, Any]:
        """Keyword arguments for the driver's ``connect()`` (its adapter decides), TLS too."""
        args = self.driver.connect_args(self.config)
        tls = self.config.tls
        if tls is not None:
            args.update(self.driver.tls_args(tls))
        return args

    def get_pool_kwargs(self) -> dict[str, Any]:
        """Pool arguments for ``create_async_engine``."""
        config = self.config
        return {
            "pool_size": config.pool_size,
            "max_overflow": config.max_overflow,
            "pool_timeout": config.pool_timeout,
            "pool_recycle": config.pool_recycle,
            # as configured; with checks_liveness the engine plugin hands it to
            # litestar_bento_db.liveness instead of SQLAlchemy's pool
            "pool_pre_ping": config.pool_pre_ping,
        }

    @property
    def pooled(self) -> bool:
        """Whether the engine keeps a pool (``supports_pool`` and ``pooling``)."""
        return self.supports_pool and self.config.pooling

    def get_engine_kwargs(self) -> dict[str, Any]:
        """All keyword arguments for ``create_async_engine``, this package's plugin too.

        ``engine_options`` come first: the settings' own arguments cannot be overridden
        (the configuration refuses them there anyway).
        """
        config = self.config
        kwargs: dict[str, Any] = dict(config.engine_options or {})
        if config.json_serializer is not None:
            kwargs["json_serializer"] = config.json_serializer
        if config.json_deserializer is not None:
            kwargs["json_deserializer"] = config.json_deserializer
        pool = self.get_pool_kwargs() if self.pooled or not self.supports_pool else {}
        if not pool:
            pool = {"poolclass": NullPool}  # SQLite keeps its own (a memory database needs it)
        return {
            **kwargs,
            "echo": config.echo,
            "hide_parameters": config.hide_parameters,
            "connect_args": self.get_connect_args(),
            **pool,
            "plugins": [PLUGIN_NAME],
            SETTINGS_KWARG: self,
        }

    def on_connect(self, dbapi_connection: Any) -> None:  # noqa: B027 - optional hook
        """Prepare a new connection (session settings, pragmas); nothing by default."""

    def create_engine(self) -> AsyncEngine:
        """Create the ``AsyncEngine`` from :meth:`get_engine_kwargs`."""
        return create_async_engine(self.config.url, **self.get_engine_kwargs())

    @staticmethod
    def run_statements(dbapi_connection: Any, statements: list[str]) -> None:
        """Execute statements on a raw (adapted) DBAPI connection, inside ``connect``."""
        cursor = dbapi_connection.cursor()
        try:
            for statement in statements:
                cursor.execute(statement)
        finally:
            cursor.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.safe_url!r})"
