"""litestar-bento-db: a production-grade async SQLAlchemy database layer for Litestar.

The core (configuration, per-dialect engine settings, the loop-safe pool, sessions,
lifecycle, resilience, draining) works in any asyncio application; the Litestar
integration lives in :mod:`litestar_bento_db.litestar`. Both are re-exported here.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

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
    DialectSettings,
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
from litestar_bento_db.litestar import (
    DatabasePlugin,
    DatabaseRuntime,
    DatabaseStartupError,
    DbEngine,
    DbSession,
    DbSessionFactory,
    HealthConfig,
    PluginConfig,
)
from litestar_bento_db.pool import LoopBoundPool
from litestar_bento_db.session import (
    create_async_engine_from_config,
    create_async_session_factory,
    create_engine_and_session_factory,
)

try:
    __version__ = version("litestar-bento-db")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

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
    "DialectSettings",
    "DrainingMode",
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
