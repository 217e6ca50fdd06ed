"""What the three benchmark apps share: the URL, pool settings, the table."""

from __future__ import annotations

import os

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

URL = os.environ.get("BENCH_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
#: identical pool settings in all three apps (pre-ping on, as this package's default)
POOL_SIZE, MAX_OVERFLOW, PRE_PING = 10, 10, True
#: identical driver settings too: asyncpg's per-statement time limit (the seed's 60 s,
#: this package's default; asyncpg arms a timer for every statement; 0 for none) and jit off
COMMAND_TIMEOUT = float(os.environ.get("BENCH_COMMAND_TIMEOUT", "60"))
POOL: dict[str, object] = {
    "pool_size": POOL_SIZE,
    "max_overflow": MAX_OVERFLOW,
    "pool_pre_ping": PRE_PING,
    "connect_args": {
        "command_timeout": COMMAND_TIMEOUT or None,
        "server_settings": {"jit": "off"},
    },
}
ROWS = 1000
QUERY = text("SELECT id, name FROM bench_item WHERE id = :id")


async def create_table(engine: AsyncEngine) -> None:
    """(Re)create ``bench_item`` with ``ROWS`` rows."""
    async with engine.begin() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS bench_item"))
        await connection.execute(
            text("CREATE TABLE bench_item (id int PRIMARY KEY, name varchar(40))")
        )
        await connection.execute(
            text("INSERT INTO bench_item VALUES (:id, :name)"),
            [{"id": i, "name": f"item {i}"} for i in range(1, ROWS + 1)],
        )
