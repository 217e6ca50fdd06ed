"""Pre-ping's protection without its round trip on busy connections.

SQLAlchemy's ``pool_pre_ping`` pings every connection at every checkout; on asyncpg the
ping itself is three round trips (a transaction around ``;``). Engines built here do
what HikariCP and pgx do instead:

- at checkout, a connection the server already closed is recognised without I/O (the
  driver saw the server's goodbye while the connection sat in the pool);
- only a connection idle longer than ``pre_ping_idle`` seconds is pinged, with ONE
  round trip (each driver's adapter says how: asyncpg a simple-protocol ``SELECT 1``,
  psycopg ``SELECT 1`` in autocommit, MySQL ``COM_PING``), bounded by
  ``ping_timeout``; a failed check replaces that one connection (SQLAlchemy's own
  reconnect-on-checkout, through the public ``checkout`` event);
- the first statement after a checkout that fails because the connection is dead (so
  nothing of the transaction can have taken effect: the server rolls back a
  transaction whose connection is gone) is run once more on a fresh connection,
  transparently. Nothing later in a transaction is ever replayed, nor a statement in
  autocommit mode, DDL, a statement on a connection whose isolation level was set for
  it, or (MySQL) a textual statement, which may commit implicitly.

The replay swaps the DBAPI connection inside the checked-out pool entry, through two
private SQLAlchemy names (``_ConnectionFairy._connection_record`` and
``_ConnectionRecord.get_connection``); tests/test_upstream_pins.py pins them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import Engine, event, exc
from sqlalchemy.engine.interfaces import ExecuteStyle
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from litestar_bento_db._counters import COUNTERS
from litestar_bento_db.drivers import driver_of_connection

__all__ = ["driver_closed", "ping_once", "replaying", "watch_checkouts"]

logger = logging.getLogger(__name__)

_LAST_USED: Final = "bento.last_checkin"  # monotonic time of the last checkin
_FIRST: Final = "bento.first_statement"  # nothing executed since this checkout


def driver_closed(dbapi_connection: Any) -> bool:
    """True when the driver already knows its connection is closed (no round trip)."""
    return driver_of_connection(dbapi_connection).is_closed(dbapi_connection.driver_connection)


def ping_once(dbapi_connection: Any, timeout: float) -> None:
    """One round trip to the server, within ``timeout`` seconds; raises on failure."""
    driver_of_connection(dbapi_connection).ping(dbapi_connection, timeout)


def watch_checkouts(engine: Engine, pre_ping_idle: float | None, timeout: float) -> None:
    """Check each checkout without I/O, and ping connections idle too long.

    Args:
        engine: An engine whose SQLAlchemy ``pool_pre_ping`` is off.
        pre_ping_idle: Ping connections idle longer than this many seconds (0: every
            checkout); None: never ping (only the checks that cost no I/O).
        timeout: Seconds a ping may take.
    """

    def checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if dbapi_connection is not None:
            record.info[_LAST_USED] = time.monotonic()

    def checkout(
        dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        record.info[_FIRST] = True
        if driver_closed(dbapi_connection):
            COUNTERS.discard("closed_while_pooled")
            raise exc.DisconnectionError("the server closed the connection while it was pooled")
        last_used = record.info.get(_LAST_USED)  # none: opened for this checkout
        if pre_ping_idle is None or last_used is None:
            return
        if time.monotonic() - last_used <= pre_ping_idle:
            return
        try:
            ping_once(dbapi_connection, timeout)
        except Exception as error:  # gone, stalled, broken: replace this one connection
            COUNTERS.discard("failed_ping")
            raise exc.DisconnectionError(f"ping failed ({type(error).__name__})") from error

    if pre_ping_idle is not None:  # when the connection was last used decides a ping
        event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def _replayable(engine: Engine, context: Any, cursor: Any, error: BaseException) -> bool:
    dialect: Any = engine.dialect  # DefaultDialect: connection_characteristics
    if context.isddl or context.execute_style is ExecuteStyle.INSERTMANYVALUES:
        return False  # DDL may commit; insertmanyvalues batches read the old cursor
    if set(dialect.connection_characteristics).intersection(context.execution_options):
        return False  # an isolation level (or the like) was set on the dead connection
    if dialect.name != "postgresql" and context.is_text:
        return False  # MySQL: textual SQL may commit implicitly
    if not isinstance(error, dialect.loaded_dbapi.Error):
        return False
    return bool(dialect.is_disconnect(error, context.root_connection.connection, cursor))


def _replay_on_fresh_connection(context: Any, error: BaseException) -> Any:
    fairy = context.root_connection.connection
    record = fairy._connection_record  # private: pinned by tests/test_upstream_pins.py
    # what this package keeps in record.info for the checkout (metrics, leak detection)
    # outlives the swap: a new connection clears it, yet the checkout goes on
    checkout = {key: value for key, value in record.info.items() if key.startswith("bento.")}
    record.invalidate(error)
    fairy.dbapi_connection = record.get_connection()  # private: pinned likewise
    record.info.update(checkout)
    context.cursor = context.create_cursor()
    return context.cursor


def replaying(engine: Engine) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A layer for the dialect's ``do_execute*`` calls: the first-statement replay.

    Applied by :func:`litestar_bento_db.instrumentation.install`.
    """
    return lambda call: _replaying(engine, call)


def _replaying(engine: Engine, call: Callable[..., Any]) -> Callable[..., Any]:
    def execute(cursor: Any, statement: str, *args: Any) -> Any:
        context = args[-1] if args else None
        if context is None:
            return call(cursor, statement, *args)
        connection = context.root_connection.connection
        try:
            first = connection.info.pop(_FIRST, False)
        except NotImplementedError:  # the connection SQLAlchemy uses to initialise
            first = False
        dbapi_connection = connection.dbapi_connection
        if not first or driver_of_connection(dbapi_connection).in_autocommit(dbapi_connection):
            return call(cursor, statement, *args)
        try:
            return call(cursor, statement, *args)
        except Exception as error:
            if not _replayable(engine, context, cursor, error):
                raise
            dead = error
        try:
            cursor = _replay_on_fresh_connection(context, dead)
        except Exception as connect_error:
            # no fresh connection to be had: report the disconnect, as without a replay
            dead.add_note(f"reconnecting to run it again failed: {type(connect_error).__name__}")
            raise dead from None
        COUNTERS.discard("dead_at_first_statement")
        logger.info("first statement of a transaction ran again on a fresh connection")
        return call(cursor, statement, *args)

    return execute
