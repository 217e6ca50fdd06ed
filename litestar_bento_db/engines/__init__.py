"""Per-dialect engine settings for SQLAlchemy and the driver; ``get_engine_for_config``."""

from __future__ import annotations

from litestar_bento_db.config import DatabaseConfig
from litestar_bento_db.engines.base import DialectSettings
from litestar_bento_db.engines.mysql import MySQLEngine
from litestar_bento_db.engines.postgresql import PostgreSQLEngine
from litestar_bento_db.engines.sqlite import SQLiteEngine

__all__ = [
    "DialectSettings",
    "MySQLEngine",
    "PostgreSQLEngine",
    "SQLiteEngine",
    "get_engine_for_config",
]

_ENGINES: dict[str, type[DialectSettings]] = {
    cls.database_type: cls for cls in (PostgreSQLEngine, MySQLEngine, SQLiteEngine)
}


def get_engine_for_config(config: DatabaseConfig) -> DialectSettings:
    """Return the dialect settings (``PostgreSQLEngine``, ...) for the configured database."""
    return _ENGINES[config.database_type](config)
