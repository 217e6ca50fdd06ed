"""Classify database errors by what the driver reports, through SQLAlchemy's wrapping.

The decision rests on asyncpg's SQLSTATE, asyncmy's error number, SQLite's result code,
SQLAlchemy's ``connection_invalidated`` and pool ``TimeoutError``, and ``OSError`` at
connect time; never on class names (SQLAlchemy raises the same ``DBAPIError`` for a
PostgreSQL deadlock and a wrong password) and never on message text.
"""

from __future__ import annotations

import contextlib
import sqlite3
import weakref
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

from litestar_bento_db.resilience.codes import (
    MYSQL_ERRNOS,
    POSTGRES_REFINEMENTS,
    POSTGRES_SQLSTATE_CLASSES,
    POSTGRES_SQLSTATES,
    SQLITE_CODES,
    ErrorCategory,
)

__all__ = [
    "DatabaseErrorClassifier",
    "ErrorCategory",
    "is_database_error_retryable",
    "track_commits",
]

#: attribute set on an exception raised while a COMMIT was in flight
DURING_COMMIT_ATTR = "_bento_during_commit"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, the DBAPI error it wraps, and their causes."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend([getattr(current, "orig", None), current.__cause__])


def _driver(exc: BaseException) -> str:
    return type(exc).__module__.split(".")[0]


class DatabaseErrorClassifier:
    """Maps an exception to an :class:`ErrorCategory`."""

    @staticmethod
    def error_code(exc: BaseException) -> str | int | None:
        """The code the database reported (SQLSTATE, error number, SQLite code), if any."""
        for current in _chain(exc):
            driver = _driver(current)
            if driver == "asyncmy" and current.args and isinstance(current.args[0], int):
                return current.args[0]
            if isinstance(current, sqlite3.Error) and current.sqlite_errorcode is not None:
                return current.sqlite_errorcode & 0xFF
            sqlstate = getattr(current, "sqlstate", None)
            if isinstance(sqlstate, str) and driver in ("asyncpg", "sqlalchemy"):
                return sqlstate
        return None

    @classmethod
    def _by_code(cls, exc: BaseException) -> ErrorCategory | None:
        for current in _chain(exc):
            driver = _driver(current)
            if driver == "asyncmy" and current.args and isinstance(current.args[0], int):
                entry = MYSQL_ERRNOS.get(current.args[0])
                return entry[0] if entry else None
            if isinstance(current, sqlite3.Error) and current.sqlite_errorcode is not None:
                sqlite_entry = SQLITE_CODES.get(current.sqlite_errorcode & 0xFF)
                return sqlite_entry[0] if sqlite_entry else None
            sqlstate = getattr(current, "sqlstate", None)
            if isinstance(sqlstate, str) and driver in ("asyncpg", "sqlalchemy"):
                message = str(current.args[0]) if current.args else ""
                for (code, prefix), refined in POSTGRES_REFINEMENTS.items():
                    if sqlstate == code and message.startswith(prefix):
                        return refined
                pg_entry = POSTGRES_SQLSTATES.get(sqlstate)
                return pg_entry[0] if pg_entry else POSTGRES_SQLSTATE_CLASSES.get(sqlstate[:2])
        return None

    @classmethod
    def classify(cls, exc: BaseException) -> ErrorCategory:
        """Classify ``exc``.

        A connection lost while a COMMIT was in flight is AMBIGUOUS (engines built by
        this package track commits; see :func:`track_commits`).
        """
        category = cls._classify(exc)
        if category in (ErrorCategory.CONNECTION, ErrorCategory.TIMEOUT) and getattr(
            exc, DURING_COMMIT_ATTR, False
        ):
            return ErrorCategory.AMBIGUOUS
        return category

    @classmethod
    def _classify(cls, exc: BaseException) -> ErrorCategory:
        if isinstance(exc, sa_exc.TimeoutError):  # pool exhausted: QueuePool limit reached
            return ErrorCategory.TRANSIENT
        by_code = cls._by_code(exc)
        if by_code is not None:
            return by_code
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return ErrorCategory.CONNECTION
        if isinstance(exc, sa_exc.DisconnectionError):
            return ErrorCategory.CONNECTION
        if isinstance(exc, TimeoutError):  # asyncpg command_timeout, connect timeout
            return ErrorCategory.TIMEOUT
        if isinstance(exc, OSError):  # refused, reset, unreachable: raised unwrapped at connect
            return ErrorCategory.CONNECTION
        if isinstance(exc, sa_exc.IntegrityError | sa_exc.ProgrammingError | sa_exc.DataError):
            return ErrorCategory.PERMANENT
        return ErrorCategory.UNKNOWN


def is_database_error_retryable(exc: BaseException, *, idempotent: bool = False) -> bool:
    """True when running the unit of work again may succeed.

    Args:
        exc: The error.
        idempotent: The operation may safely run twice, so AMBIGUOUS is retryable too.
    """
    category = DatabaseErrorClassifier.classify(exc)
    retryable = {ErrorCategory.TRANSIENT, ErrorCategory.CONNECTION}
    if idempotent:
        retryable.add(ErrorCategory.AMBIGUOUS)
    return category in retryable


def track_commits(engine: AsyncEngine) -> None:
    """Mark errors raised while a COMMIT is in flight, so they classify as AMBIGUOUS."""
    sync_engine = engine.sync_engine
    # connections whose COMMIT has been sent (kept outside Connection.info, which an
    # invalidated connection no longer exposes)
    committing: weakref.WeakSet[Connection] = weakref.WeakSet()

    def on_transaction_end(connection: Connection) -> None:
        committing.discard(connection)

    def on_commit(connection: Connection) -> None:
        committing.add(connection)

    def on_error(context: ExceptionContext) -> None:
        connection = context.connection
        if connection is None or connection not in committing:
            return
        committing.discard(connection)
        for error in (context.sqlalchemy_exception, context.original_exception):
            _mark(error)

    event.listen(sync_engine, "begin", on_transaction_end)
    event.listen(sync_engine, "commit", on_commit)
    event.listen(sync_engine, "rollback", on_transaction_end)
    event.listen(sync_engine, "handle_error", on_error)


def _mark(error: Any) -> None:
    if error is not None:
        with contextlib.suppress(AttributeError):  # an exception type with __slots__
            setattr(error, DURING_COMMIT_ATTR, True)
