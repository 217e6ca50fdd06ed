"""psycopg 3 (async): PostgreSQL through libpq (``postgresql+psycopg://``).

Optional: ``pip install litestar-bento-db[psycopg]``. ``postgresql://`` still selects
asyncpg.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import math
import re
import select
import socket
import ssl
from typing import TYPE_CHECKING, Any, ClassVar, Final

from litestar_bento_db.drivers.base import Call, Driver, Reported, postgres_server_settings
from litestar_bento_db.tls import (
    HANDSHAKE_FAILED,
    HOST_NAME_MISMATCH,
    NO_TLS,
    SYSTEM_CA,
    UNTRUSTED,
)

if TYPE_CHECKING:
    from litestar_bento_db.config import DatabaseConfig
    from litestar_bento_db.tls import TlsSettings

__all__ = ["PsycopgDriver"]

#: libpq reports no SQLSTATE for a connection the server refused; its message carries
#: the server's FATAL line. (message fragment, the SQLSTATE the server sent)
_REFUSALS: Final = (
    (re.compile(r"password authentication failed"), "28P01"),
    (
        re.compile(
            r'role "[^"]*" does not exist|no pg_hba\.conf entry|pg_hba\.conf rejects connection'
            r"|requires a valid client certificate|certificate authentication failed"
        ),
        "28000",
    ),
    (re.compile(r'database "[^"]*" does not exist'), "3D000"),
    (re.compile(r"too many clients|too many connections"), "53300"),
    (re.compile(r"database system is (starting up|shutting down|in recovery)"), "57P03"),
)
#: libpq reports a TLS failure in its message only (no SSL error object reaches Python):
#: (message fragment, the reason). "SSL SYSCALL error" (the connection cut) is not one.
_TLS_FAILURES: Final = (
    (re.compile(r"server does not support SSL"), NO_TLS),
    (re.compile(r"server certificate for .* does not match host name"), HOST_NAME_MISMATCH),
    (re.compile(r"certificate verify failed"), UNTRUSTED),
    (re.compile(r"SSL error: (.+)"), HANDSHAKE_FAILED),
)
#: what a psycopg connection failure without a server code is: ``connection_failure``
_CONNECTION_FAILURE: Final = "08006"
#: seconds past ``command_timeout`` (the server's own limit) before the client cuts a
#: connection whose server stopped answering
STALL_MARGIN: Final = 1.0

logger = logging.getLogger(__name__)


@functools.cache
def _connection_class() -> type[Any]:
    import psycopg

    class LoopBoundConnection(psycopg.AsyncConnection[Any]):
        """psycopg's ``AsyncConnection``, remembering the event loop that opened it."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            try:
                self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                self.loop = None

    return LoopBoundConnection


async def _connect(*args: Any, **kwargs: Any) -> Any:
    """SQLAlchemy's ``async_creator_fn``: connect with :class:`LoopBoundConnection`."""
    return await _connection_class().connect(*args, **kwargs)


def _shut_down(driver_connection: Any) -> bool:
    """Shut the connection's socket down under whoever waits on it: the wait sees EOF.

    On a duplicate of the descriptor: libpq keeps (and later closes) its own, so no
    reader registered on it is left watching a closed or reused descriptor. True when
    the connection is unusable afterwards (shut down now or before, or closed).
    """
    try:
        fd = driver_connection.pgconn.socket
    except Exception:  # closed already: no socket left
        return True
    try:
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
    except OSError as error:
        return error.errno == errno.ENOTCONN  # shut down before
    return True


def _cut(driver_connection: Any) -> None:
    """End a connection whose server stopped answering within the time limit."""
    if not driver_connection.closed and _shut_down(driver_connection):
        logger.warning("no answer from the server within the time limit: connection cut")


def _statement_connection(args: tuple[Any, ...]) -> Any:
    context = args[-1] if args else None
    if context is None:
        return None
    return context.root_connection.connection.dbapi_connection.driver_connection


def _commit_connection(args: tuple[Any, ...]) -> Any:
    return args[0].driver_connection


class PsycopgDriver(Driver):
    """psycopg 3 through SQLAlchemy's ``postgresql+psycopg`` dialect (async variant).

    psycopg itself works from any event loop; its connections are bound to the loop
    that opened them all the same (:class:`LoopBoundConnection`), so the pool treats
    every driver alike. ``command_timeout`` is the server's ``statement_timeout``.
    """

    name: ClassVar[str] = "psycopg"
    database_type = "postgresql"
    module: ClassVar[str] = "psycopg"
    connection_class: ClassVar[str] = "AsyncConnection"
    extra: ClassVar[str | None] = "psycopg"

    def connect_args(self, config: DatabaseConfig) -> dict[str, Any]:
        """Connect timeout, application name, ``statement_timeout`` and ``jit`` options.

        With ``pgbouncer``: no startup options (PgBouncer refuses them; set
        ``statement_timeout`` on the role instead) and ``prepare_threshold=None``.
        """
        settings = postgres_server_settings(config)
        args: dict[str, Any] = {
            # libpq takes whole seconds (and waits at least 2)
            "connect_timeout": max(1, math.ceil(config.connect_timeout)),
            "application_name": settings.pop("application_name"),
            "async_creator_fn": _connect,
        }
        if config.pgbouncer:
            args["prepare_threshold"] = None
            return args
        if config.command_timeout > 0:
            settings["statement_timeout"] = str(max(1, round(config.command_timeout * 1000)))
        args["options"] = " ".join(f"-c {name}={value}" for name, value in settings.items())
        return args

    def tls_args(self, tls: TlsSettings) -> dict[str, Any]:
        """Libpq's own ``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``.

        ``system`` is given as the system's CA file (libpq before 16 reads the word as a
        file name; 16 and later also refuse it below ``verify-full``).
        """
        args: dict[str, Any] = {"sslmode": tls.mode}
        root_cert = tls.root_cert
        if root_cert == SYSTEM_CA:
            root_cert = ssl.get_default_verify_paths().cafile or SYSTEM_CA
        for key, value in (("sslrootcert", root_cert), ("sslcert", tls.cert), ("sslkey", tls.key)):
            if value is not None:
                args[key] = value
        return args

    def tls_failure(self, error: BaseException) -> str | None:
        """From libpq's message (see ``_TLS_FAILURES``)."""
        import psycopg

        if not isinstance(error, psycopg.OperationalError):
            return None
        message = str(error)
        for pattern, reason in _TLS_FAILURES:
            match = pattern.search(message)
            if match is not None:
                detail = match.group(1).strip() if match.groups() else ""
                return f"{reason} ({detail})" if detail else reason
        return None

    def loop_of(self, driver_connection: Any) -> asyncio.AbstractEventLoop | None:
        """The loop :class:`LoopBoundConnection` recorded (None for a plain connection)."""
        loop = getattr(driver_connection, "loop", None)
        return loop if isinstance(loop, asyncio.AbstractEventLoop) else None

    def is_closed(self, driver_connection: Any) -> bool:
        """Closed, or something arrived while idle in the pool (the server's goodbye).

        An idle connection is sent nothing unless the server ends it (a FATAL notice,
        then EOF); a zero-timeout poll of the socket sees that without a round trip.
        """
        if driver_connection.closed:
            return True
        poller = select.poll()
        poller.register(driver_connection.pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))

    def ping(self, dbapi_connection: Any, timeout: float) -> None:
        """``SELECT 1`` in autocommit (no BEGIN): one round trip."""

        async def ping(connection: Any) -> None:
            # bounded by cutting the socket, not by cancelling: psycopg's cancellation
            # of a wait on a silent server takes its own 10 s (older releases: for ever)
            timer = asyncio.get_running_loop().call_later(timeout, _cut, connection)
            try:
                if connection.autocommit:
                    await connection.execute("SELECT 1")
                    return
                await connection.set_autocommit(True)  # idle: no round trip
                await connection.execute("SELECT 1")  # a failure discards the connection
                await connection.set_autocommit(False)
            finally:
                timer.cancel()

        dbapi_connection.run_async(ping)

    def in_autocommit(self, dbapi_connection: Any) -> bool:
        """Psycopg's ``autocommit``."""
        return bool(dbapi_connection.autocommit)

    def terminate(self, driver_connection: Any) -> bool:
        """Libpq's ``PQfinish`` (``pgconn.finish()``): synchronous, needs no loop.

        Only for a connection nobody waits on (it closes the descriptor): a checked-out
        one is :meth:`interrupt`-ed instead.
        """
        driver_connection.pgconn.finish()
        return True

    def interrupt(self, driver_connection: Any) -> bool:
        """Shut the socket down: a pending wait sees EOF, the next call fails."""
        return _shut_down(driver_connection)

    def guard(self, call: Call, config: DatabaseConfig, *, commit: bool) -> Call | None:
        """A timer per call: past ``command_timeout`` + 1 s the connection is cut.

        ``commit`` stands for every call taking the connection alone (``do_commit``,
        ``do_rollback``).

        psycopg waits for the server without a limit; the server's ``statement_timeout``
        ends slow statements, not a silent network. The call then raises
        ``TimeoutError``, as asyncpg's ``command_timeout`` does (TIMEOUT; AMBIGUOUS
        during COMMIT), and the connection is replaced.
        """
        if config.command_timeout <= 0:
            return None
        deadline = config.command_timeout + STALL_MARGIN
        connection_of = _commit_connection if commit else _statement_connection

        def guarded(*args: Any) -> Any:
            driver_connection = connection_of(args)
            if driver_connection is None:
                return call(*args)
            loop = asyncio.get_running_loop()
            timer = loop.call_later(deadline, _cut, driver_connection)
            try:
                return call(*args)
            except Exception:
                if loop.time() < timer.when():
                    raise
                # as asyncpg's command_timeout: a timeout (not psycopg's connection error,
                # which would classify CONNECTION and have a first statement run again)
                raise TimeoutError(f"no answer from the server within {deadline:g} s") from None
            finally:
                timer.cancel()

        return guarded

    def report(self, error: BaseException) -> Reported | None:
        """The ``sqlstate`` psycopg reports (from ``diag``).

        A connection failure without one is ``08006``, or what the server's FATAL line
        names (see ``_REFUSALS``).
        """
        import psycopg

        if not isinstance(error, psycopg.Error):
            return None
        message = str(error.diag.message_primary or error)
        sqlstate = error.sqlstate
        if sqlstate is None:
            if not isinstance(error, psycopg.OperationalError):
                return None
            sqlstate = next(
                (code for pattern, code in _REFUSALS if pattern.search(message)),
                _CONNECTION_FAILURE,
            )
        return Reported("postgresql", self.name, sqlstate, message, error)

    def constraint_name(self, report: Reported, chain: list[BaseException]) -> str | None:
        """``diag.constraint_name``."""
        name = getattr(getattr(report.error, "diag", None), "constraint_name", None)
        return name if isinstance(name, str) else None
