"""MySQL and MariaDB through asyncmy."""

from __future__ import annotations

from typing import Any, ClassVar

from litestar_bento_db.engines.base import DialectSettings
from litestar_bento_db.pool import LoopBoundPool

__all__ = ["MySQLEngine"]

#: seconds the server's idle timeout is kept above ``pool_recycle``
WAIT_TIMEOUT_MARGIN = 60


class MySQLEngine(DialectSettings):
    """asyncmy: connect timeout, utf8mb4, recycle below ``wait_timeout``, statement limit.

    Every connection sets the server's statement time limit (MariaDB
    ``max_statement_time``, MySQL ``max_execution_time``) from ``command_timeout`` and a
    session ``wait_timeout`` longer than ``pool_recycle``; asyncmy's ``read_timeout``
    catches a server that stops answering altogether.
    """

    database_type = "mysql"
    checks_liveness = True
    # read_only refuses writes of users without SUPER (MariaDB: READ ONLY ADMIN)
    read_only_query: ClassVar[str | None] = "SELECT @@global.read_only"

    def get_pool_kwargs(self) -> dict[str, Any]:
        """Pool arguments with the event-loop-safe pool."""
        return {
            **super().get_pool_kwargs(),
            **LoopBoundPool.engine_kwargs(
                overflow_idle_timeout=self.config.overflow_idle_timeout,
                max_pending=self.config.max_pending,
            ),
        }

    def session_statements(self, server_info: str) -> list[str]:
        """The ``SET SESSION`` statements for a server (its version string decides)."""
        config = self.config
        settings: list[str] = []
        if config.pool_recycle > 0:
            settings.append(f"wait_timeout = {config.pool_recycle + WAIT_TIMEOUT_MARGIN}")
        if "mariadb" in server_info.lower():
            settings.append(f"max_statement_time = {config.command_timeout:g}")
        else:
            # MySQL limits read-only SELECTs only, in milliseconds
            settings.append(f"max_execution_time = {round(config.command_timeout * 1000)}")
        return [f"SET SESSION {', '.join(settings)}"]

    def on_connect(self, dbapi_connection: Any) -> None:
        """Apply the session limits on each new connection."""
        server_info = dbapi_connection.driver_connection.get_server_info()
        self.run_statements(dbapi_connection, self.session_statements(server_info))
