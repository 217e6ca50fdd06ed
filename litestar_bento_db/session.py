"""Engines and session factories built from a :class:`DatabaseConfig`."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from litestar_bento_db.config import DatabaseConfig
from litestar_bento_db.engines import get_engine_for_config

__all__ = [
    "create_async_engine_from_config",
    "create_async_session_factory",
    "create_engine_and_session_factory",
]


def create_async_engine_from_config(config: DatabaseConfig | None = None) -> AsyncEngine:
    """Create an ``AsyncEngine`` tuned for the configured database.

    Args:
        config: The configuration; read from ``DB_*`` variables when omitted.

    Returns:
        The engine. No connection is opened until first use.
    """
    return get_engine_for_config(config or DatabaseConfig()).create_engine()


def create_async_session_factory(
    engine: AsyncEngine,
    *,
    expire_on_commit: bool = False,
    autoflush: bool = True,
) -> async_sessionmaker[AsyncSession]:
    """Create a session factory bound to ``engine``.

    Args:
        engine: The engine sessions connect through.
        expire_on_commit: Expire loaded objects after commit (off: they stay usable).
        autoflush: Flush pending changes before each query.

    Returns:
        An ``async_sessionmaker`` producing ``AsyncSession`` objects.
    """
    return async_sessionmaker(engine, expire_on_commit=expire_on_commit, autoflush=autoflush)


def create_engine_and_session_factory(
    config: DatabaseConfig | None = None,
) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """Create the engine and its session factory in one call."""
    engine = create_async_engine_from_config(config)
    return engine, create_async_session_factory(engine)
