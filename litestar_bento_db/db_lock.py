"""A lock across every process that uses one database, for work that must run once.

PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``); MySQL/MariaDB:
``GET_LOCK``; SQLite: an exclusive ``flock`` on a file beside the database (an
in-memory database belongs to one process: no lock). The lock is tried every
``poll`` seconds rather than waited for in one statement, so no statement outlives
``command_timeout`` and a waiter gives up after ``timeout``. It is held by a connection
of its own, in autocommit (no transaction stays open meanwhile), and released with it:
a process that dies releases it too. Not through PgBouncer in transaction pooling
(a session lock needs the session): use a direct URL for that work.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["DatabaseLockTimeout", "database_lock"]

logger = logging.getLogger(__name__)

_TRY: Final = {
    "postgresql": ("SELECT pg_try_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"),
    "mysql": ("SELECT GET_LOCK(:name, 0)", "SELECT RELEASE_LOCK(:name)"),
}


class DatabaseLockTimeout(TimeoutError):
    """The lock was not free within the timeout."""


def _key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name`` (stable across processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.asynccontextmanager
async def database_lock(
    engine: AsyncEngine, name: str, *, timeout: float = 300.0, poll: float = 0.2
) -> AsyncIterator[float]:
    """Hold the lock ``name`` of ``engine``'s database while the block runs.

    Args:
        engine: An engine to the database.
        name: The lock's name (up to 64 characters on MySQL).
        timeout: Seconds to wait for it before :class:`DatabaseLockTimeout`.
        poll: Seconds between tries.

    Yields:
        The seconds spent waiting for the lock.
    """
    started = time.monotonic()
    dialect = engine.dialect.name
    if dialect == "sqlite":
        async with _file_lock(engine, name, started, timeout, poll):
            yield time.monotonic() - started
        return
    take, release = _TRY[dialect]
    params = {"key": _key(name), "name": name[:64]}
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        for attempt in itertools.count():
            if await _try(autocommit, take, params):
                break
            if attempt == 0:
                logger.info("waiting for database lock %r", name)
            if time.monotonic() - started > timeout:
                raise DatabaseLockTimeout(f"database lock {name!r} not free after {timeout} s")
            await asyncio.sleep(poll)
        waited = time.monotonic() - started
        logger.debug("database lock %r taken after %.3f s", name, waited)
        try:
            yield waited
        finally:
            await autocommit.execute(text(release), params)


async def _try(connection: AsyncConnection, take: str, params: dict[str, object]) -> bool:
    return bool((await connection.execute(text(take), params)).scalar())


@contextlib.asynccontextmanager
async def _file_lock(
    engine: AsyncEngine, name: str, started: float, timeout: float, poll: float
) -> AsyncIterator[None]:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        yield  # one process's own database
        return
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    path = Path(f"{database}.{digest}.lock")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for attempt in itertools.count():
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == 0:
                    logger.info("waiting for database lock %r", name)
                if time.monotonic() - started > timeout:
                    raise DatabaseLockTimeout(
                        f"database lock {name!r} ({path}) not free after {timeout} s"
                    ) from None
                await asyncio.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
