"""Alembic's ``upgrade head`` at startup, once across every process that starts at once.

Each worker takes the database lock (:mod:`litestar_bento_db.db_lock`), reads the
revision the database is at and, unless it is already the head of the scripts, runs
advanced-alchemy's ``upgrade head``; the others wait for the lock meanwhile and then
find the database at head. Only then does the worker become ready.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from litestar_bento_db.config import ConfigError, DatabaseConfig
from litestar_bento_db.db_lock import database_lock
from litestar_bento_db.engines import get_engine_for_config

__all__ = ["LOCK_NAME", "check_scripts", "migrate_to_head"]

logger = logging.getLogger(__name__)

#: the database lock the migrating worker holds
LOCK_NAME = "litestar-bento-db:migrate"


def check_scripts(config: SQLAlchemyAsyncConfig) -> None:
    """Raise ``ConfigError`` when the Alembic scripts to run are not there."""
    location = config.alembic_config.script_location
    if ":" not in location and not (Path(location) / "env.py").is_file():
        raise ConfigError(
            f"migrate_on_startup: no Alembic env.py in {location!r} (relative to "
            f"{Path.cwd()}); give alembic_config=AlembicAsyncConfig(script_location=...)"
        )


def _commands(config: SQLAlchemyAsyncConfig, engine: AsyncEngine) -> AlembicCommands:
    """advanced-alchemy's commands, on ``engine`` in place of the app's engine."""
    app_engine = config.engine_instance
    config.engine_instance = engine  # read once, by the constructor
    try:
        return AlembicCommands(sqlalchemy_config=config)
    finally:
        config.engine_instance = app_engine


async def migrate_to_head(
    config: SQLAlchemyAsyncConfig,
    database: DatabaseConfig,
    engine: AsyncEngine,
    *,
    lock_timeout: float,
) -> bool:
    """Upgrade the database to the scripts' head, under the database lock.

    Alembic runs in a thread (its ``env.py`` runs its own event loop) on an engine of
    its own, which its ``env.py`` disposes; the app's engine is not touched.

    Args:
        config: The app's advanced-alchemy config (its ``alembic_config``).
        database: The database settings (the migration's engine is built from them).
        engine: The app's engine: the lock and the revision checks use it.
        lock_timeout: Seconds to wait for the lock.

    Returns:
        Whether this process ran the migration (False: the database was at head).
    """
    alembic = config.alembic_config
    settings = get_engine_for_config(dataclasses.replace(database, metrics=False))
    migration_engine = settings.create_engine()
    try:
        commands = _commands(config, migration_engine)
        heads = set(ScriptDirectory.from_config(commands.config).get_heads())

        def current(connection: Connection) -> set[str]:
            context = MigrationContext.configure(
                connection,
                opts={
                    "version_table": alembic.version_table_name,
                    "version_table_schema": alembic.version_table_schema,
                },
            )
            return set(context.get_current_heads())

        async with database_lock(engine, LOCK_NAME, timeout=lock_timeout) as waited:
            async with engine.connect() as connection:
                before = await connection.run_sync(current)
            if before == heads:
                logger.info(
                    "database already at head %s (waited %.2f s for the migration lock)",
                    ",".join(sorted(heads)),
                    waited,
                )
                return False
            started = time.monotonic()
            await asyncio.to_thread(commands.upgrade, "head")
            logger.info(
                "database migrated from %s to %s in %.2f s",
                ",".join(sorted(before)) or "nothing",
                ",".join(sorted(heads)),
                time.monotonic() - started,
            )
            return True
    finally:
        await migration_engine.dispose()
