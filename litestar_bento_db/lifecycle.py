"""Database lifecycle: create tables, probe, report, clean up.

:func:`probe` is the one way this package checks that a database answers: the app's
warm-up, its readiness route, :func:`health_check`, :func:`get_database_info` and the
CLI all go through it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, MetaData, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import Pool, QueuePool

from litestar_bento_db.pool import LoopBoundPool
from litestar_bento_db.resilience.classification import describe_error
from litestar_bento_db.urls import database_type_of, mask_url

__all__ = [
    "Probe",
    "SchemaMismatchError",
    "cleanup_database",
    "drop_all_tables",
    "get_database_info",
    "health_check",
    "init_database",
    "pool_status",
    "probe",
]

logger = logging.getLogger(__name__)


class SchemaMismatchError(RuntimeError):
    """The database lacks tables or columns that the models declare."""


def _metadata(models: type[DeclarativeBase] | MetaData) -> MetaData:
    return models if isinstance(models, MetaData) else models.metadata


def _missing_schema(connection: Connection, metadata: MetaData) -> list[str]:
    inspector = inspect(connection)
    missing: list[str] = []
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name, schema=table.schema):
            missing.append(table.fullname)
            continue
        present = {column["name"] for column in inspector.get_columns(table.name, table.schema)}
        missing.extend(f"{table.fullname}.{c.name}" for c in table.columns if c.name not in present)
    return missing


async def init_database(
    engine: AsyncEngine, base: type[DeclarativeBase] | MetaData, *, check_tables: bool = False
) -> None:
    """Create the models' tables that do not exist yet.

    Args:
        engine: The engine to use.
        base: The declarative base (or the ``MetaData``) that lists the tables.
        check_tables: Afterwards, check that every table and column the models
            declare exists (``create_all`` never alters a table that already exists).

    Raises:
        SchemaMismatchError: With ``check_tables``, when tables or columns are missing.
    """
    metadata = _metadata(base)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
        if check_tables:
            missing = await connection.run_sync(_missing_schema, metadata)
            if missing:
                raise SchemaMismatchError(
                    "database schema is behind the models; missing: " + ", ".join(missing)
                )
    logger.info("database tables ready: %d", len(metadata.tables))


@dataclass(frozen=True)
class Probe:
    """The outcome of one :func:`probe`."""

    ok: bool
    """The database answered in time."""
    latency_ms: float | None
    """How long it took (None when it failed)."""
    checked_at: float
    """``time.monotonic()`` when the probe finished."""
    error: str | None = None
    """Why it failed: a TLS failure's reason, else the error's class name (never its
    message: it may carry secrets)."""
    read_only: bool | None = None
    """The server refuses writes (a standby, read-only mode); None when not asked."""


#: what a read-only check answers for "writable": false, 0, and MariaDB's ``read_only``
#: ENUM ``OFF`` (its other values, ``ON`` and the ``NO_LOCK`` ones, are read-only)
_WRITABLE_ANSWERS = frozenset({"FALSE", "0", "OFF", "NONE", ""})


async def _open_and_ping(engine: AsyncEngine, query: str) -> tuple[AsyncConnection, bool]:
    connection = await engine.connect()
    try:
        answer = (await connection.execute(text(query))).scalar()
    except BaseException:
        await connection.close()
        raise
    return connection, str(answer).strip().upper() not in _WRITABLE_ANSWERS


async def _ping(engine: AsyncEngine, connections: int, query: str) -> bool:
    results = await asyncio.gather(
        *(_open_and_ping(engine, query) for _ in range(connections)), return_exceptions=True
    )
    for result in results:  # held until all are open: they are distinct connections
        if not isinstance(result, BaseException):
            await result[0].close()
    answers = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        answers.append(result[1])
    return any(answers)


async def probe(
    engine: AsyncEngine,
    *,
    timeout: float,
    connections: int = 1,
    read_only_query: str | None = None,
) -> Probe:
    """Run ``SELECT 1`` on ``connections`` pooled connections at once, within ``timeout``.

    Never raises (except when the calling task itself is cancelled). Opening several
    connections warms the pool up: each is checked out (and opened if needed) at the
    same time, so they are distinct.

    Args:
        engine: The engine to probe.
        timeout: Seconds allowed in all.
        connections: How many connections to open and ping concurrently.
        read_only_query: Run this instead of ``SELECT 1``: a query answering true when
            the server refuses writes (:attr:`DialectSettings.read_only_query`); the
            answer is :attr:`Probe.read_only`. Still one round trip.
    """
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            read_only = await _ping(engine, max(1, connections), read_only_query or "SELECT 1")
    except Exception as exc:
        # never the message: driver messages can carry the user, host or SQL
        return Probe(False, None, time.monotonic(), describe_error(exc))
    latency = round((time.perf_counter() - started) * 1000, 2)
    return Probe(True, latency, time.monotonic(), read_only=read_only if read_only_query else None)


async def health_check(engine: AsyncEngine, *, timeout: float = 5.0) -> bool:
    """Tell whether the database answers ``SELECT 1`` within ``timeout`` seconds.

    Never raises (except when the calling task itself is cancelled).
    """
    result = await probe(engine, timeout=timeout)
    if not result.ok:
        url = mask_url(engine.url)
        logger.warning("database health check failed for %s: %s", url, result.error)
    return result.ok


def pool_status(pool: Pool) -> dict[str, Any]:
    """The pool's figures: size, checked out, checked in, overflow (zeros without a pool)."""
    status: dict[str, Any] = {"pool_class": type(pool).__name__}
    if isinstance(pool, QueuePool):
        status.update(
            pool_size=pool.size(),
            pool_checked_out=pool.checkedout(),
            pool_checked_in=pool.checkedin(),
            pool_overflow=max(pool.overflow(), 0),
            pool_max_overflow=pool.max_overflow if isinstance(pool, LoopBoundPool) else None,
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
        ``reachable``, ``error`` (why not: :attr:`Probe.error`), ``latency_ms`` and the
        pool figures of :func:`pool_status`.
    """
    dialect = engine.dialect
    result = await probe(engine, timeout=timeout)
    version = dialect.server_version_info
    return {
        "driver": dialect.driver,
        "database_type": database_type_of(dialect.name) or dialect.name,
        "database_name": engine.url.database,
        "reachable": result.ok,
        "error": result.error,
        "latency_ms": result.latency_ms,
        "server_version": ".".join(str(part) for part in version) if version else None,
        **pool_status(engine.pool),
    }


async def cleanup_database(engine: AsyncEngine) -> None:
    """Close every pooled connection and dispose of the engine."""
    await engine.dispose()
    logger.info("database engine disposed")


async def drop_all_tables(engine: AsyncEngine, base: type[DeclarativeBase] | MetaData) -> None:
    """Drop every table of the models' metadata. For tests only."""
    async with engine.begin() as connection:
        await connection.run_sync(_metadata(base).drop_all)
