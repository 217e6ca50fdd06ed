"""Real failures on a test's connection, for testing an app's own error handling.

Nothing is mocked: the database server ends the session, or cancels a statement that
ran past its time limit, and the driver reports it as it would in production.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["DatabaseFaults"]

#: statements that manage the test transaction's savepoints: never the one to fail
_SAVEPOINT_STATEMENTS: Final = ("SAVEPOINT", "RELEASE", "ROLLBACK")


@dataclass(frozen=True)
class _Server:
    session_id: str
    """The connection's server session id."""
    kill: str
    """Ends the session ``{id}``, from another connection."""
    gone: str
    """Counts the sessions with id ``{id}``."""
    time_out: tuple[str, ...]
    """Run in place of a statement: fail with the server's statement time-out."""


_SERVERS: Final = {
    "postgresql": _Server(
        "SELECT pg_backend_pid()",
        "SELECT pg_terminate_backend({id})",
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {id}",
        ("SET LOCAL statement_timeout = 50", "SELECT pg_sleep(5)"),
    ),
    "mysql": _Server(
        "SELECT CONNECTION_ID()",
        "KILL CONNECTION {id}",
        "SELECT count(*) FROM information_schema.processlist WHERE id = {id}",
        ("SET STATEMENT max_statement_time = 0.05 FOR SELECT SLEEP(5)",),
    ),
}


class DatabaseFaults:
    """Failures provoked on the connection that holds a test's transaction.

    The ``db_faults`` fixture gives one for the test's ``db_connection``; requests made
    through ``db_client`` run on that connection too. PostgreSQL and MariaDB (MySQL:
    ``kill_connection`` only); on SQLite each method skips the test.

    Args:
        engine: An engine to the same database, for the connection that ends the session.
        connection: The connection that fails.
    """

    def __init__(self, engine: AsyncEngine, connection: AsyncConnection) -> None:
        self.engine = engine
        self.connection = connection

    def _server(self, *, time_out: bool = False) -> _Server:
        import pytest

        dialect = self.connection.dialect
        server = _SERVERS.get(dialect.name)
        if server is None:
            pytest.skip(f"db_faults: {dialect.name} has no server session")
        if time_out and dialect.name == "mysql" and not getattr(dialect, "is_mariadb", False):
            pytest.skip("db_faults: written for MariaDB (max_statement_time), not MySQL")
        return server

    async def kill_connection(self) -> None:
        """End the connection's server session, as a failover or a proxy's timeout does.

        Returns once the server has ended it; the next statement on the connection fails
        as a lost connection (the plugin answers 503 + ``Retry-After``). The test's
        transaction is gone with it: its rollback at teardown is skipped.
        """
        server = self._server()
        session_id = int((await self.connection.execute(text(server.session_id))).scalar_one())
        async with self.engine.connect() as connection:
            # each poll in a transaction of its own: PostgreSQL shows pg_stat_activity as
            # it was at the transaction's first look, so one early look would last 5 s
            other = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await other.execute(text(server.kill.format(id=session_id)))
            for _ in range(100):
                remaining = await other.scalar(text(server.gone.format(id=session_id)))
                if not remaining:
                    return
                await asyncio.sleep(0.05)
        raise AssertionError(f"db_faults: server session {session_id} still there after 5 s")

    def time_out_next_statement(self) -> None:
        """Make the next statement on the connection fail with the server's time-out.

        In its place the server runs a sleep under a 50 ms statement limit (PostgreSQL's
        ``statement_timeout``, MariaDB's ``max_statement_time``) and cancels it: the
        error is the database's own (SQLSTATE 57014, MariaDB 1969), classified TIMEOUT
        (the plugin answers 503 + ``Retry-After``). Savepoint statements are let through.
        """
        *prepare, sleep = self._server(time_out=True).time_out
        sync_connection = self.connection.sync_connection
        assert sync_connection is not None
        armed = [True]  # once; the listener stays (removing it here mutates the dispatch)

        def replace(
            _connection: Any,
            cursor: Any,
            statement: str,
            parameters: Any,
            _context: Any,
            executemany: bool,
        ) -> tuple[str, Any]:
            if not armed or statement.lstrip().upper().startswith(_SAVEPOINT_STATEMENTS):
                return statement, parameters
            armed.clear()
            for sql in prepare:
                cursor.execute(sql)
            # the sleep runs as the statement: its error is handled as the statement's
            # would be (what this event raises itself SQLAlchemy 2.0 does not wrap)
            if executemany:
                return sleep, [type(parameters[0])()]
            return sleep, type(parameters)() if parameters is not None else None

        event.listen(sync_connection, "before_cursor_execute", replace, retval=True)
