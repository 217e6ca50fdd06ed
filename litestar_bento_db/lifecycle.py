"""Database lifecycle: create tables, check health, report, clean up."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import Pool, QueuePool

from litestar_bento_db.config import mask_url

__all__ = [
    "SchemaMismatchError",
    "cleanup_database",
    "drop_all_tables",
    "get_database_info",
    "health_check",
    "init_database",
    "ping",
]

logger = logging.getLogger(__name__)

_DATABASE_TYPES = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}


class SchemaMismatchError(RuntimeError):
    """The database lacks tables or columns that the models declare."""


def _missing_schema(connection: Connection, base: type[DeclarativeBase]) -> list[str]:
    inspector = inspect(connection)
    missing: list[str] = []
    for table in base.metadata.sorted_tables:
        if not inspector.has_table(table.name, schema=table.schema):
            missing.append(table.fullname)
            continue
        present = {column["name"] for column in inspector.get_columns(table.name, table.schema)}
        missing.extend(f"{table.fullname}.{c.name}" for c in table.columns if c.name not in present)
    return missing


async def init_database(
    engine: AsyncEngine, base: type[DeclarativeBase], *, check_tables: bool = False
) -> None:
    """Create the models' tables that do not exist yet.

    Args:
        engine: The engine to use.
        base: The declarative base whose metadata lists the tables.
        check_tables: Afterwards, check that every table and column the models
            declare exists (``create_all`` never alters a table that already exists).

    Raises:
        SchemaMismatchError: With ``check_tables``, when tables or columns are missing.
    """
    async with engine.begin() as connection:
        await connection.run_sync(base.metadata.create_all)
        if check_tables:
            missing = await connection.run_sync(_missing_schema, base)
            if missing:
                raise SchemaMismatchError(
                    "database schema is behind the models; missing: " + ", ".join(missing)
                )
    logger.info("database tables ready: %d", len(base.metadata.tables))


async def ping(engine: AsyncEngine) -> None:
    """Run ``SELECT 1`` on a connection from the pool; raises on failure."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def health_check(engine: AsyncEngine, *, timeout: float = 5.0) -> bool:
    """Tell whether the database answers ``SELECT 1`` within ``timeout`` seconds.

    Never raises (except when the calling task itself is cancelled).
    """
    try:
        async with asyncio.timeout(timeout):
            await ping(engine)
    except Exception as exc:
        logger.warning(
            "database health check failed for %s: %s", mask_url(engine.url), type(exc).__name__
        )
        return False
    return True


def pool_status(pool: Pool) -> dict[str, Any]:
    """The pool's figures: size, checked out, checked in, overflow (zeros without a pool)."""
    status: dict[str, Any] = {"pool_class": type(pool).__name__}
    if isinstance(pool, QueuePool):
        status.update(
            pool_size=pool.size(),
            pool_checked_out=pool.checkedout(),
            pool_checked_in=pool.checkedin(),
            pool_overflow=max(pool.overflow(), 0),
            pool_max_overflow=pool._max_overflow,
            pool_timeout=pool.timeout(),
        )
    else:
        status.update(
            pool_size=0, pool_checked_out=0, pool_checked_in=0, pool_overflow=0,
            pool_max_overflow=0, pool_timeout=None,
        )  # fmt: skip
    return status


async def get_database_info(engine: AsyncEngine, *, timeout: float = 5.0) -> dict[str, Any]:
    """Describe the database and pool; never includes a password, user or host.

    Args:
        engine: The engine to describe.
        timeout: Seconds allowed for the connection that reads the server version.

    Returns:
        ``driver``, ``database_type``, ``database_name``, ``server_version``,
        ``reachable``, ``latency_ms`` and the pool figures of :func:`pool_status`.
    """
    dialect = engine.dialect
    info: dict[str, Any] = {
        "driver": dialect.driver,
        "database_type": _DATABASE_TYPES.get(dialect.name, dialect.name),
        "database_name": engine.url.database,
    }
    started = time.perf_counter()
    reachable = await health_check(engine, timeout=timeout)
    info["reachable"] = reachable
    info["latency_ms"] = round((time.perf_counter() - started) * 1000, 2) if reachable else None
    version = dialect.server_version_info
    info["server_version"] = ".".join(str(part) for part in version) if version else None
    info.update(pool_status(engine.pool))
    return info


async def cleanup_database(engine: AsyncEngine) -> None:
    """Close every pooled connection and dispose of the engine."""
    await engine.dispose()
    logger.info("database engine disposed")


async def drop_all_tables(engine: AsyncEngine, base: type[DeclarativeBase]) -> None:
    """Drop every table of the models' metadata. For tests only."""
    async with engine.begin() as connection:
        await connection.run_sync(base.metadata.drop_all)
