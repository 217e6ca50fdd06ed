"""asyncpg: PostgreSQL's asyncio driver (``postgresql+asyncpg://``, the default)."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from litestar_bento_db.drivers.base import ProtocolDriver, Reported, postgres_server_settings
from litestar_bento_db.tls import NO_TLS

if TYPE_CHECKING:
    from litestar_bento_db.config import DatabaseConfig
    from litestar_bento_db.tls import TlsSettings

__all__ = ["AsyncpgDriver"]


#: sqlclient_unable_to_establish_sqlconnection
_NO_MATCHING_HOST = "08001"
#: asyncpg's only sign that the server answered "no TLS here" to its SSLRequest: a plain
#: ``ConnectionError`` saying so (pinned by tests/test_upstream_pins.py)
_REJECTED_UPGRADE = "rejected SSL upgrade"


def _unique_statement_name() -> str:
    # PgBouncer in transaction mode may route two connections' statements to one
    # server connection: names must never collide
    return f"__asyncpg_{uuid.uuid4().hex}__"


class AsyncpgDriver(ProtocolDriver):
    """asyncpg through SQLAlchemy's ``postgresql+asyncpg`` dialect.

    Private names relied on (pinned by tests/test_upstream_pins.py): a connection's
    ``_loop`` (its event loop) and ``_transport`` (closed by hand when that loop is).
    """

    name: ClassVar[str] = "asyncpg"
    database_type = "postgresql"
    module: ClassVar[str] = "asyncpg"
    connection_class: ClassVar[str] = "Connection"
    # SQLAlchemy's adapter re-raises asyncpg's errors as its own, with ``sqlstate``
    error_modules: ClassVar[tuple[str, ...]] = ("sqlalchemy.dialects.postgresql.asyncpg",)

    def connect_args(self, config: DatabaseConfig) -> dict[str, Any]:
        """Connect and command timeouts, server settings; PgBouncer: no statement cache."""
        args: dict[str, Any] = {
            "timeout": config.connect_timeout,
            "command_timeout": config.command_timeout or None,
            "server_settings": postgres_server_settings(config),
        }
        if config.pgbouncer:
            args["statement_cache_size"] = 0
            args["prepared_statement_cache_size"] = 0
            args["prepared_statement_name_func"] = _unique_statement_name
        return args

    def tls_args(self, tls: TlsSettings) -> dict[str, Any]:
        """``ssl``: an ``SSLContext`` when TLS is required, else asyncpg's own mode name.

        Asyncpg takes certificate files only inside a DSN: the context carries them.
        """
        return {"ssl": tls.ssl_context() if tls.required else tls.mode}

    def tls_failure(self, error: BaseException) -> str | None:
        """The ``ssl`` error in the chain; or the server refused TLS (under ``require``)."""
        if type(error) is ConnectionError and _REJECTED_UPGRADE in str(error):
            return NO_TLS
        return super().tls_failure(error)

    def loop_of(self, driver_connection: Any) -> asyncio.AbstractEventLoop | None:
        """Asyncpg keeps its loop in ``_loop`` (private, pinned)."""
        loop = getattr(driver_connection, "_loop", None)
        return loop if isinstance(loop, asyncio.AbstractEventLoop) else None

    def is_closed(self, driver_connection: Any) -> bool:
        """Asyncpg's public ``is_closed()`` (it reads the server's goodbye as it comes)."""
        return bool(driver_connection.is_closed())

    def ping(self, dbapi_connection: Any, timeout: float) -> None:
        """``SELECT 1`` over the simple query protocol: one round trip, no Parse/Bind."""
        dbapi_connection.run_async(lambda c: c.execute("SELECT 1", timeout=timeout))

    def in_autocommit(self, dbapi_connection: Any) -> bool:
        """SQLAlchemy's asyncpg adapter keeps the isolation level itself."""
        return bool(getattr(dbapi_connection, "autocommit", False))

    def terminate(self, driver_connection: Any) -> bool:
        """Asyncpg's ``terminate()``: closes the socket now."""
        driver_connection.terminate()
        return True

    def report(self, error: BaseException) -> Reported | None:
        """Asyncpg's ``sqlstate``.

        ``TargetServerAttributeNotMatched`` (no host of a multi-host URL fits
        ``target_session_attrs``: e.g. no primary during a failover) has none: it is
        ``08001``, no connection could be established.
        """
        import asyncpg

        sqlstate = getattr(error, "sqlstate", None)
        if not isinstance(sqlstate, str):
            if not isinstance(error, asyncpg.TargetServerAttributeNotMatched):
                return None
            sqlstate = _NO_MATCHING_HOST
        message = str(error.args[0]) if error.args else ""
        return Reported("postgresql", self.name, sqlstate, message, error)

    def constraint_name(self, report: Reported, chain: list[BaseException]) -> str | None:
        """Asyncpg's own exception has ``constraint_name``; SQLAlchemy's wrapper has not."""
        names = (getattr(error, "constraint_name", None) for error in chain)
        return next((name for name in names if isinstance(name, str)), None)
