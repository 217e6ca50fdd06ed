"""What an adapter tells about one DBAPI driver, and what a driver's error reported.

A :class:`Driver` is the one place that knows a driver: its URL name, its connect
arguments, which event loop a connection belongs to, how to tell without I/O that a
connection is closed, how to ping, terminate and abandon one, whether it is in
autocommit, and how its errors report a code, a message and a constraint name.
Everything else in the package asks the adapter (:mod:`litestar_bento_db.drivers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from litestar_bento_db.tls import ssl_error_reason

if TYPE_CHECKING:
    from litestar_bento_db.config import DatabaseConfig
    from litestar_bento_db.tls import TlsSettings
    from litestar_bento_db.urls import DatabaseType

__all__ = ["Call", "Driver", "ProtocolDriver", "Reported", "postgres_server_settings"]

#: a dialect call (``do_execute``, ``do_commit``, ...)
Call = Callable[..., Any]


@dataclass(frozen=True)
class Reported:
    """What the database reported: the driver, its code, the message, the error."""

    database: DatabaseType
    """``"postgresql"``, ``"mysql"`` or ``"sqlite"``: which code table ``code`` is from."""
    driver: str
    """The driver's URL name (``"asyncpg"``, ``"psycopg"``, ``"asyncmy"``, ``"aiosqlite"``)."""
    code: str | int
    """SQLSTATE (PostgreSQL), error number (MySQL), primary result code (SQLite)."""
    message: str
    """The driver's message (may contain values: never show it to clients)."""
    error: BaseException
    """The driver's exception."""
    extended_code: int | None = None
    """SQLite's extended result code (which constraint failed)."""


def postgres_server_settings(config: DatabaseConfig) -> dict[str, str]:
    """Session parameters every PostgreSQL driver sends at connect time."""
    settings = {"application_name": config.application_name}
    if not config.pgbouncer:
        # PgBouncer refuses startup parameters it does not track (such as jit)
        settings["jit"] = "off"
    return settings


class Driver:
    """One DBAPI driver as this package uses it; subclasses fill in each method.

    A method a driver cannot do raises ``NotImplementedError`` rather than guessing.
    """

    name: ClassVar[str]
    """The driver's name in a URL (``postgresql+<name>://``)."""
    database_type: ClassVar[DatabaseType]
    """The database it connects to."""
    module: ClassVar[str]
    """The driver's top-level module: its errors are defined there."""
    connection_class: ClassVar[str]
    """The name, in ``module``, of the driver's connection class (subclasses count)."""
    error_modules: ClassVar[tuple[str, ...]] = ()
    """Further modules whose errors carry this driver's report (SQLAlchemy's adapters)."""
    extra: ClassVar[str | None] = None
    """The package extra that installs it, when it is optional."""

    def connect_args(self, config: DatabaseConfig) -> dict[str, Any]:
        """Keyword arguments for the driver's ``connect()`` (through SQLAlchemy)."""
        raise NotImplementedError

    def tls_args(self, tls: TlsSettings) -> dict[str, Any]:
        """Keyword arguments for ``connect()`` that ask for ``tls``."""
        raise NotImplementedError

    def tls_failure(self, error: BaseException) -> str | None:
        """Why ``error``, raised by ``connect()``, is a TLS failure; None if it is not one.

        A TLS failure is one that trying again cannot fix: a certificate not trusted or
        not naming the host, a server without TLS when TLS is required. By default: the
        ``ssl`` module's error in the chain (:func:`~litestar_bento_db.tls.ssl_error_reason`).
        """
        return ssl_error_reason(error)

    def owns_connection(self, driver_connection: Any) -> bool:
        """Whether ``driver_connection`` is one of this driver's connections.

        Subclasses count (asyncpg's ``connection_class``); none exists unless the driver
        was imported.
        """
        cls = getattr(sys.modules.get(self.module), self.connection_class, None)
        return isinstance(cls, type) and isinstance(driver_connection, cls)

    def loop_of(self, driver_connection: Any) -> asyncio.AbstractEventLoop | None:
        """The event loop the connection belongs to; None if it belongs to none."""
        return None

    def is_closed(self, driver_connection: Any) -> bool:
        """True when the driver knows, without a round trip, that the connection is closed."""
        raise NotImplementedError

    def ping(self, dbapi_connection: Any, timeout: float) -> None:
        """One round trip to the server, within ``timeout`` seconds; raises on failure.

        ``dbapi_connection`` is SQLAlchemy's adapted connection (``run_async``).
        """
        raise NotImplementedError

    def in_autocommit(self, dbapi_connection: Any) -> bool:
        """Whether the (adapted) connection runs each statement in its own transaction."""
        raise NotImplementedError

    def terminate(self, driver_connection: Any) -> bool:
        """Close the connection now, without awaiting; False when the driver cannot."""
        raise NotImplementedError

    def abandon(self, driver_connection: Any) -> None:
        """Close a connection whose event loop is stopped or closed (no loop to run on)."""
        self.terminate(driver_connection)

    def interrupt(self, driver_connection: Any) -> bool:
        """Make the holder's pending or next call on a checked-out connection fail, now.

        Draining's FORCE mode uses it. By default :meth:`terminate`.
        """
        return self.terminate(driver_connection)

    def guard(self, call: Call, config: DatabaseConfig, *, commit: bool) -> Call | None:
        """``call`` bounded in time on the client side, where the driver does not bound it.

        A server that stops answering (a network stall) must not hold a statement or
        COMMIT for ever. None: the driver's own settings bound it already.

        Args:
            call: The dialect's ``do_execute*`` (``commit=False``), ``do_commit`` or
                ``do_rollback``.
            config: The configuration (``command_timeout``).
            commit: Whether ``call`` takes the connection alone (``do_commit``,
                ``do_rollback``).
        """
        return None

    def report(self, error: BaseException) -> Reported | None:
        """The code ``error`` (one of this driver's errors) carries, if any."""
        raise NotImplementedError

    def constraint_name(self, report: Reported, chain: list[BaseException]) -> str | None:
        """The name of the violated constraint in ``report``, when the database says it.

        Args:
            report: The driver's report of a constraint violation.
            chain: The whole exception chain (a field may sit on a wrapping error).
        """
        return None

    def __repr__(self) -> str:
        return f"<driver {self.name}>"


class ProtocolDriver(Driver):
    """A driver built on an asyncio protocol and transport (asyncpg, asyncmy).

    Its connection keeps the transport in ``_transport`` (private, pinned by
    tests/test_upstream_pins.py).
    """

    def abandon(self, driver_connection: Any) -> None:
        """Terminate; a closed loop refuses the transport's last callback: run it here."""
        try:
            self.terminate(driver_connection)
        except RuntimeError:
            transport = getattr(driver_connection, "_transport", None)
            if transport is not None:
                with contextlib.suppress(RuntimeError):
                    transport._call_connection_lost(None)
