"""aiosqlite: SQLite in a thread (``sqlite+aiosqlite://``, the default)."""

from __future__ import annotations

import re
import sqlite3
from typing import TYPE_CHECKING, Any, ClassVar, Final

from litestar_bento_db.drivers.base import Driver, Reported

if TYPE_CHECKING:
    from litestar_bento_db.config import DatabaseConfig

__all__ = ["AiosqliteDriver"]

_CONSTRAINT_NAME: Final = re.compile(r"constraint failed: (.+)$")
#: SQLITE_CONSTRAINT_FOREIGNKEY: SQLite names no constraint for it
_FOREIGN_KEY: Final = 787


class AiosqliteDriver(Driver):
    """aiosqlite through SQLAlchemy's ``sqlite+aiosqlite`` dialect.

    SQLite engines are not pooled (``NullPool``, or one ``StaticPool`` connection for
    ``:memory:``), so the pool's liveness checks do not apply; errors are ``sqlite3``'s.
    """

    name: ClassVar[str] = "aiosqlite"
    database_type = "sqlite"
    module: ClassVar[str] = "aiosqlite"
    connection_class: ClassVar[str] = "Connection"
    error_modules: ClassVar[tuple[str, ...]] = ("sqlite3",)

    def connect_args(self, config: DatabaseConfig) -> dict[str, Any]:
        """``sqlite3.connect()`` arguments (aiosqlite passes them through)."""
        return {
            "check_same_thread": False,
            "timeout": config.connect_timeout,
            "cached_statements": 100,
        }

    def is_closed(self, driver_connection: Any) -> bool:
        """A file connection has no peer that could close it."""
        return False

    def in_autocommit(self, dbapi_connection: Any) -> bool:
        """``isolation_level`` None is sqlite3's autocommit."""
        return bool(dbapi_connection.driver_connection.isolation_level is None)

    def terminate(self, driver_connection: Any) -> bool:
        """Not without awaiting: aiosqlite closes in its own thread."""
        return False

    def report(self, error: BaseException) -> Reported | None:
        """``sqlite_errorcode``: the primary code is its low byte."""
        if not isinstance(error, sqlite3.Error) or error.sqlite_errorcode is None:
            return None
        code = error.sqlite_errorcode
        message = str(error.args[0]) if error.args else ""
        return Reported("sqlite", self.name, code & 0xFF, message, error, code)

    def constraint_name(self, report: Reported, chain: list[BaseException]) -> str | None:
        """The columns or the check from the message (none for a foreign key)."""
        if report.extended_code == _FOREIGN_KEY:
            return None
        matches = list(_CONSTRAINT_NAME.finditer(report.message))
        return matches[-1].group(1) if matches else None
