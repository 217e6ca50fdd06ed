"""Dialect engines: per-database settings for SQLAlchemy and the driver."""

from __future__ import annotations

from litestar_bento_db.config import DatabaseConfig
from litestar_bento_db.engines.base import DialectEngine
from litestar_bento_db.engines.mysql import MySQLEngine
from litestar_bento_db.engines.postgresql import PostgreSQLEngine
from litestar_bento_db.engines.sqlite import SQLiteEngine

__all__ = [
    "DialectEngine",
    "MySQLEngine",
    "PostgreSQLEngine",
    "SQLiteEngine",
    "get_engine_for_config",
]

_ENGINES: dict[str, type[DialectEngine]] = {
    cls.database_type: cls for cls in (PostgreSQLEngine, MySQLEngine, SQLiteEngine)
}


def get_engine_for_config(config: DatabaseConfig) -> DialectEngine:
    """Return the dialect engine for the configuration's database type."""
    return _ENGINES[config.database_type](config)
