"""Alembic's environment for the example app.

advanced-alchemy's commands (``litestar database upgrade``, and the plugin's
``migrate_on_startup``) hand over the engine and the version table's settings in the
Alembic config; the tables of ``example_app.models`` are the target of autogenerate.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from advanced_alchemy.base import BigIntBase
from alembic import context
from sqlalchemy.ext.asyncio import AsyncEngine

import example_app.models  # noqa: F401 - the tables, on BigIntBase.metadata

if TYPE_CHECKING:
    from advanced_alchemy.alembic.commands import AlembicCommandConfig
    from sqlalchemy.engine import Connection

config = cast("AlembicCommandConfig", context.config)


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=BigIntBase.metadata,
        version_table=config.version_table_name,
        version_table_schema=config.version_table_schema,
        compare_type=config.compare_type,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = config.engine
    if not isinstance(engine, AsyncEngine):
        raise RuntimeError("run through advanced-alchemy's commands: they give the engine")
    async with engine.connect() as connection:
        await connection.run_sync(run_migrations)
    await engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not set up for the example app")
asyncio.run(run_online())
