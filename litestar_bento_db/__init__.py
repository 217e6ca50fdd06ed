"""litestar-bento-db: a production-grade async SQLAlchemy database layer for Litestar."""

from __future__ import annotations

from litestar_bento_db.config import ConfigError, DatabaseConfig, get_database_config, mask_url
from litestar_bento_db.draining import (
    ConnectionDrainer,
    DrainingMode,
    DrainStats,
    SignalDrain,
    drain_connections,
    drain_with_signal_handler,
)
from litestar_bento_db.engines import (
    DialectEngine,
    MySQLEngine,
    PostgreSQLEngine,
    SQLiteEngine,
    get_engine_for_config,
)
from litestar_bento_db.lifecycle import (
    SchemaMismatchError,
    cleanup_database,
    drop_all_tables,
    get_database_info,
    health_check,
    init_database,
)
from litestar_bento_db.options import HealthConfig, PluginConfig
from litestar_bento_db.plugin import DatabasePlugin, DbEngine, DbSession, DbSessionFactory
from litestar_bento_db.pool import LoopBoundPool
from litestar_bento_db.runtime import DatabaseRuntime, DatabaseStartupError
from litestar_bento_db.session import (
    create_async_engine_from_config,
    create_async_session_factory,
    create_engine_and_session_factory,
)

__all__ = [
    "ConfigError",
    "ConnectionDrainer",
    "DatabaseConfig",
    "DatabasePlugin",
    "DatabaseRuntime",
    "DatabaseStartupError",
    "DbEngine",
    "DbSession",
    "DbSessionFactory",
    "DrainStats",
    "DrainingMode",
    "DialectEngine",
    "HealthConfig",
    "LoopBoundPool",
    "MySQLEngine",
    "PluginConfig",
    "PostgreSQLEngine",
    "SQLiteEngine",
    "SchemaMismatchError",
    "SignalDrain",
    "cleanup_database",
    "create_async_engine_from_config",
    "create_async_session_factory",
    "create_engine_and_session_factory",
    "drain_connections",
    "drain_with_signal_handler",
    "drop_all_tables",
    "get_database_config",
    "get_database_info",
    "get_engine_for_config",
    "health_check",
    "init_database",
    "mask_url",
]
