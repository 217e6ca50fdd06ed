"""A user's conftest.py: the plugin, the schema once per run, and the ``app`` fixture.

Run: ``pytest examples/testing --db-url postgresql+asyncpg://postgres@127.0.0.1/test``
(or ``TEST_DB_URL=...``; SQLite and MariaDB URLs work the same).
"""

from __future__ import annotations

import asyncio

import pytest
from advanced_alchemy.base import BigIntBase
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine

from example_app.app import create_app
from litestar_bento_db import DatabaseConfig

pytest_plugins = ["litestar_bento_db.testing"]


@pytest.fixture(scope="session", autouse=True)
def schema(db_engine: AsyncEngine) -> None:
    """Fresh tables for the run (the tests themselves leave nothing behind)."""

    async def create() -> None:
        async with db_engine.begin() as connection:
            await connection.run_sync(BigIntBase.metadata.drop_all)
            await connection.run_sync(BigIntBase.metadata.create_all)

    asyncio.run(create())


@pytest.fixture
def app(db_config: DatabaseConfig) -> Litestar:
    """The app under test, on the test database."""
    return create_app(db_config)
