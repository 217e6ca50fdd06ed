"""SQLite through aiosqlite."""

from __future__ import annotations

from typing import Any

from sqlalchemy.pool import NullPool, StaticPool

from litestar_bento_db.engines.base import DialectSettings

__all__ = ["SQLiteEngine"]


class SQLiteEngine(DialectSettings):
    """aiosqlite: no pool for a file, one shared connection for ``:memory:``.

    Every connection gets ``busy_timeout`` (from ``connect_timeout``) and
    ``foreign_keys=ON``; a file database also ``journal_mode=WAL``.
    """

    database_type = "sqlite"
    supports_pool = False

    def get_pool_kwargs(self) -> dict[str, Any]:
        """``NullPool`` for a file; ``StaticPool`` keeps an in-memory database alive."""
        if self.config.is_memory_sqlite:
            return {"poolclass": StaticPool}
        return {"poolclass": NullPool}

    def pragmas(self) -> list[str]:
        """The ``PRAGMA`` statements run on every connection."""
        statements = [
            f"PRAGMA busy_timeout = {round(self.config.connect_timeout * 1000)}",
            "PRAGMA foreign_keys = ON",
        ]
        if not self.config.is_memory_sqlite:
            statements.append("PRAGMA journal_mode = WAL")
        return statements

    def on_connect(self, dbapi_connection: Any) -> None:
        """Apply the pragmas."""
        self.run_statements(dbapi_connection, self.pragmas())
