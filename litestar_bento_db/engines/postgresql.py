"""PostgreSQL through asyncpg (the default) or psycopg 3."""

from __future__ import annotations

from typing import Any, ClassVar

from litestar_bento_db.engines.base import DialectSettings
from litestar_bento_db.pool import LoopBoundPool

__all__ = ["PostgreSQLEngine"]


class PostgreSQLEngine(DialectSettings):
    """Connect and statement timeouts, server settings, a LIFO loop-safe pool.

    With ``pgbouncer=True`` (PgBouncer in transaction pooling mode) the driver's
    prepared statements are off (asyncpg: no caches and unique names; psycopg:
    ``prepare_threshold=None``), and only startup parameters PgBouncer accepts are sent.
    """

    database_type = "postgresql"
    checks_liveness = True
    json_column_type: ClassVar[str] = "JSONB"
    # on in every transaction of a hot standby, and under default_transaction_read_only
    read_only_query: ClassVar[str | None] = "SELECT current_setting('transaction_read_only') = 'on'"

    def get_pool_kwargs(self) -> dict[str, Any]:
        """Pool arguments: LIFO, so idle connections beyond the working set expire."""
        return {
            **super().get_pool_kwargs(),
            **LoopBoundPool.engine_kwargs(
                overflow_idle_timeout=self.config.overflow_idle_timeout,
                max_pending=self.config.max_pending,
            ),
            "pool_use_lifo": True,
        }
