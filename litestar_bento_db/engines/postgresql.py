"""PostgreSQL through asyncpg."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from litestar_bento_db.engines.base import DialectSettings
from litestar_bento_db.pool import LoopBoundPool

__all__ = ["PostgreSQLEngine"]


def _unique_statement_name() -> str:
    # PgBouncer in transaction mode may route two connections' statements to one
    # server connection: names must never collide
    return f"__asyncpg_{uuid.uuid4().hex}__"


class PostgreSQLEngine(DialectSettings):
    """asyncpg: connect and command timeouts, server settings, a LIFO pool.

    With ``pgbouncer=True`` (PgBouncer in transaction pooling mode) the prepared
    statement caches are off, statement names are unique, and only startup
    parameters PgBouncer accepts are sent.
    """

    database_type = "postgresql"
    checks_liveness = True
    json_column_type: ClassVar[str] = "JSONB"

    def get_server_settings(self) -> dict[str, str]:
        """Session parameters sent at connect time."""
        settings = {"application_name": self.config.application_name}
        if not self.config.pgbouncer:
            # PgBouncer refuses startup parameters it does not track (such as jit)
            settings["jit"] = "off"
        return settings

    def get_connect_args(self) -> dict[str, Any]:
        """Asyncpg ``connect()`` arguments."""
        config = self.config
        args: dict[str, Any] = {
            "timeout": config.connect_timeout,
            "command_timeout": config.command_timeout or None,
            "server_settings": self.get_server_settings(),
        }
        if config.pgbouncer:
            args["statement_cache_size"] = 0
            args["prepared_statement_cache_size"] = 0
            args["prepared_statement_name_func"] = _unique_statement_name
        return args

    def get_pool_kwargs(self) -> dict[str, Any]:
        """Pool arguments: LIFO, so idle connections beyond the working set expire."""
        return {
            **super().get_pool_kwargs(),
            **LoopBoundPool.engine_kwargs(overflow_idle_timeout=self.config.overflow_idle_timeout),
            "pool_use_lifo": True,
        }
