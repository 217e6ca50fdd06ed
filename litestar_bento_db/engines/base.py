"""Per-dialect settings: what each database needs from SQLAlchemy and its driver.

A :class:`DialectSettings` subclass is not an engine: it turns a
:class:`~litestar_bento_db.DatabaseConfig` into the arguments of ``create_async_engine``
(connect arguments, pool settings, statements for each new connection) and builds the
``AsyncEngine`` from them. The subclasses keep the names of the usage guide:
``PostgreSQLEngine``, ``MySQLEngine``, ``SQLiteEngine``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from litestar_bento_db.config import ConfigError, DatabaseConfig, DatabaseType
from litestar_bento_db.liveness import watch_liveness
from litestar_bento_db.metrics.instrument import instrument_engine
from litestar_bento_db.resilience.classification import track_errors

__all__ = ["DialectSettings"]

#: seconds a liveness ping may take at most (less when ``connect_timeout`` is shorter)
PING_TIMEOUT = 5.0


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

    @abstractmethod
    def get_connect_args(self) -> dict[str, Any]:
        """Keyword arguments for the driver's ``connect()``."""

    def get_pool_kwargs(self) -> dict[str, Any]:
        """Pool arguments for ``create_async_engine``."""
        config = self.config
        return {
            "pool_size": config.pool_size,
            "max_overflow": config.max_overflow,
            "pool_timeout": config.pool_timeout,
            "pool_recycle": config.pool_recycle,
            # with checks_liveness, litestar_bento_db.liveness checks instead
            "pool_pre_ping": config.pool_pre_ping and not self.checks_liveness,
        }

    def get_engine_kwargs(self) -> dict[str, Any]:
        """All keyword arguments for ``create_async_engine``."""
        return {
            "echo": self.config.echo,
            "hide_parameters": self.config.hide_parameters,
            "connect_args": self.get_connect_args(),
            **self.get_pool_kwargs(),
        }

    def on_connect(self, dbapi_connection: Any) -> None:  # noqa: B027 - optional hook
        """Prepare a new connection (session settings, pragmas); nothing by default."""

    def create_engine(self) -> AsyncEngine:
        """Create the ``AsyncEngine`` with these settings and the ``on_connect`` hook."""
        engine = create_async_engine(self.config.url, **self.get_engine_kwargs())

        def _connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            self.on_connect(dbapi_connection)

        event.listen(engine.sync_engine, "connect", _connect)
        track_errors(engine)
        if self.checks_liveness:
            config = self.config
            watch_liveness(
                engine,
                pre_ping_idle=config.pre_ping_idle if config.pool_pre_ping else None,
                ping_timeout=min(config.connect_timeout, PING_TIMEOUT),
            )
        instrument_engine(engine, self.config)
        return engine

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
