"""asyncmy: MySQL and MariaDB (``mysql+asyncmy://``, the default)."""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import TYPE_CHECKING, Any, ClassVar, Final

from litestar_bento_db.drivers.base import ProtocolDriver, Reported
from litestar_bento_db.tls import NO_TLS, causes_of

if TYPE_CHECKING:
    from litestar_bento_db.config import DatabaseConfig
    from litestar_bento_db.tls import TlsSettings

__all__ = ["AsyncmyDriver"]

#: seconds the client waits beyond ``command_timeout`` for the server's own time-limit error
READ_TIMEOUT_MARGIN = 0.25

# where the server names the constraint in its message; the value part of a duplicate-key
# message comes first, so the last match is the server's own
_CONSTRAINT_NAME: Final = re.compile(r"for key '([^']+)'|CONSTRAINT `([^`]+)`|constraint '([^']+)'")
#: OpenSSL's reason when the peer answers a TLS handshake in plain text: asyncmy starts
#: TLS whether or not the server offered it, and a server without TLS goes on in MySQL's
#: plain protocol
_PLAIN_TEXT_ANSWER: Final = "WRONG_VERSION_NUMBER"


class AsyncmyDriver(ProtocolDriver):
    """asyncmy through SQLAlchemy's ``mysql+asyncmy`` dialect.

    Private name relied on (pinned by tests/test_upstream_pins.py): a connection's
    ``_transport``, which is closing once the server's FIN or RST has been read.
    """

    name: ClassVar[str] = "asyncmy"
    database_type = "mysql"
    module: ClassVar[str] = "asyncmy"
    connection_class: ClassVar[str] = "Connection"

    def connect_args(self, config: DatabaseConfig) -> dict[str, Any]:
        """Connect timeout, utf8mb4, the program name, ``read_timeout``.

        ``read_timeout`` bounds each wait for the server: a statement over its limit gets
        the server's own error first (just before), a silent network path this one.
        """
        args: dict[str, Any] = {
            "connect_timeout": config.connect_timeout,
            "charset": "utf8mb4",
            "program_name": config.application_name,
        }
        if config.command_timeout > 0:
            margin = min(READ_TIMEOUT_MARGIN, config.command_timeout / 10)
            args["read_timeout"] = config.command_timeout + margin
        return args

    def tls_args(self, tls: TlsSettings) -> dict[str, Any]:
        """``ssl``: an ``SSLContext`` (asyncmy's own dict skips verification without a CA).

        Asyncmy always starts TLS when given one: ``prefer`` falls back to a plain
        connection when the server has no TLS (:mod:`litestar_bento_db.connector`).
        """
        return {"ssl": tls.ssl_context()} if tls.encrypts else {}

    def tls_failure(self, error: BaseException) -> str | None:
        """The ``ssl`` error asyncmy wraps in error 2003 ("Can't connect")."""
        plain = (
            isinstance(cause, ssl.SSLError) and cause.reason == _PLAIN_TEXT_ANSWER
            for cause in causes_of(error)
        )
        return NO_TLS if any(plain) else super().tls_failure(error)

    def loop_of(self, driver_connection: Any) -> asyncio.AbstractEventLoop | None:
        """Asyncmy's public ``loop``."""
        loop = getattr(driver_connection, "loop", None)
        return loop if isinstance(loop, asyncio.AbstractEventLoop) else None

    def is_closed(self, driver_connection: Any) -> bool:
        """The transport (``_transport``, pinned) is closing once the server hung up."""
        transport = getattr(driver_connection, "_transport", None)
        return transport is None or bool(transport.is_closing())

    def ping(self, dbapi_connection: Any, timeout: float) -> None:
        """``COM_PING``."""
        dbapi_connection.run_async(lambda c: asyncio.wait_for(c.ping(False), timeout))

    def in_autocommit(self, dbapi_connection: Any) -> bool:
        """Asyncmy's ``get_autocommit()``."""
        return bool(dbapi_connection.driver_connection.get_autocommit())

    def terminate(self, driver_connection: Any) -> bool:
        """Asyncmy's ``close()`` closes the socket without a goodbye, without awaiting."""
        driver_connection.close()
        return True

    def report(self, error: BaseException) -> Reported | None:
        """The error number in ``args[0]``, the message in ``args[1]``."""
        if not error.args or not isinstance(error.args[0], int):
            return None
        message = str(error.args[1]) if len(error.args) > 1 else ""
        return Reported("mysql", self.name, error.args[0], message, error)

    def constraint_name(self, report: Reported, chain: list[BaseException]) -> str | None:
        """From the server's message (asyncmy has no field for it)."""
        matches = list(_CONSTRAINT_NAME.finditer(report.message))
        if not matches:
            return None
        return next((group for group in matches[-1].groups() if group), None)
