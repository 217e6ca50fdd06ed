"""Classify database errors by what the driver reports, through SQLAlchemy's wrapping.

The decision rests on asyncpg's SQLSTATE, asyncmy's error number, SQLite's result code,
SQLAlchemy's ``connection_invalidated`` and pool ``TimeoutError``, and ``OSError`` at
connect time; never on class names (SQLAlchemy raises the same ``DBAPIError`` for a
PostgreSQL deadlock and a wrong password) and never on message text alone (the one
refinement by message, ``POSTGRES_REFINEMENTS``, applies within its code).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

from litestar_bento_db._counters import COUNTERS
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
    "Reported",
    "error_chain",
    "is_database_error",
    "is_database_error_retryable",
    "is_driver_error",
    "mark_database_error",
    "reported",
    "retryable_categories",
    "track_commits",
    "track_errors",
]

#: attribute set on an exception raised while a COMMIT was in flight
DURING_COMMIT_ATTR = "_bento_during_commit"
#: attribute set on a driver exception that reached the caller unwrapped (asyncpg's
#: ``TimeoutError`` and ``OSError`` at connect or from ``command_timeout``)
DATABASE_ERROR_ATTR = "_bento_database_error"


def error_chain(exc: BaseException) -> Iterator[BaseException]:
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


_DRIVERS: Final = frozenset({"asyncpg", "asyncmy"})


def is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` itself is an error class of asyncpg or asyncmy."""
    return _driver(exc) in _DRIVERS


@dataclass(frozen=True)
class Reported:
    """What the database reported: which driver, its code, the message, the error."""

    driver: str
    """``"asyncpg"``, ``"asyncmy"`` or ``"sqlite"``."""
    code: str | int
    """SQLSTATE (asyncpg), error number (asyncmy), primary result code (SQLite)."""
    message: str
    """The driver's message (may contain values: never show it to clients)."""
    error: BaseException
    """The driver's exception."""
    extended_code: int | None = None
    """SQLite's extended result code (which constraint failed)."""


def reported(exc: BaseException) -> Reported | None:
    """The first code a driver reported in the exception chain, if any."""
    for current in error_chain(exc):
        driver = _driver(current)
        message = str(current.args[0]) if current.args else ""
        if driver == "asyncmy" and current.args and isinstance(current.args[0], int):
            message = str(current.args[1]) if len(current.args) > 1 else ""
            return Reported("asyncmy", current.args[0], message, current)
        if isinstance(current, sqlite3.Error) and current.sqlite_errorcode is not None:
            code = current.sqlite_errorcode
            return Reported("sqlite", code & 0xFF, message, current, code)
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and driver in ("asyncpg", "sqlalchemy"):
            return Reported("asyncpg", sqlstate, message, current)
    return None


def _category_of(report: Reported) -> ErrorCategory | None:
    code = report.code
    if report.driver == "asyncmy":
        entry = MYSQL_ERRNOS.get(int(code))
    elif report.driver == "sqlite":
        entry = SQLITE_CODES.get(int(code))
    else:
        sqlstate = str(code)
        for (refined_code, prefix), refined in POSTGRES_REFINEMENTS.items():
            if sqlstate == refined_code and report.message.startswith(prefix):
                return refined
        entry = POSTGRES_SQLSTATES.get(sqlstate)
        if entry is None:
            return POSTGRES_SQLSTATE_CLASSES.get(sqlstate[:2])
    return entry[0] if entry else None


def retryable_categories(
    *, idempotent: bool = False, retry_timeouts: bool = False
) -> frozenset[ErrorCategory]:
    """The categories worth another attempt.

    Args:
        idempotent: The operation may safely run twice (AMBIGUOUS is retried too).
        retry_timeouts: Statements cancelled by the time limit are retried too.
    """
    categories = {ErrorCategory.TRANSIENT, ErrorCategory.CONNECTION}
    if idempotent:
        categories.add(ErrorCategory.AMBIGUOUS)
    if retry_timeouts:
        categories.add(ErrorCategory.TIMEOUT)
    return frozenset(categories)


class DatabaseErrorClassifier:
    """Maps an exception to an :class:`ErrorCategory`."""

    @staticmethod
    def error_code(exc: BaseException) -> str | int | None:
        """The code the database reported (SQLSTATE, error number, SQLite code), if any."""
        report = reported(exc)
        return report.code if report else None

    @classmethod
    def classify(cls, exc: BaseException) -> ErrorCategory:
        """Classify ``exc``.

        A connection lost while a COMMIT was in flight is AMBIGUOUS (engines built by
        this package track commits; see :func:`track_commits`).
        """
        category = cls._classify(exc)
        if category in (ErrorCategory.CONNECTION, ErrorCategory.TIMEOUT) and any(
            getattr(error, DURING_COMMIT_ATTR, False) for error in error_chain(exc)
        ):
            return ErrorCategory.AMBIGUOUS
        return category

    @classmethod
    def _classify(cls, exc: BaseException) -> ErrorCategory:
        if isinstance(exc, sa_exc.TimeoutError):  # pool exhausted: QueuePool limit reached
            return ErrorCategory.TRANSIENT
        report = reported(exc)
        by_code = _category_of(report) if report else None
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
    return DatabaseErrorClassifier.classify(exc) in retryable_categories(idempotent=idempotent)


def is_database_error(exc: BaseException) -> bool:
    """True when ``exc`` (or an error in its chain) came from the database layer.

    Any SQLAlchemy error, a driver error, or an unwrapped ``OSError``/``TimeoutError``
    that an engine built here raised while connecting or running a statement.
    """
    return any(
        isinstance(error, sa_exc.SQLAlchemyError)
        or getattr(error, DATABASE_ERROR_ATTR, False)
        or is_driver_error(error)
        or isinstance(error, sqlite3.Error)
        for error in error_chain(exc)
    )


def mark_database_error(error: BaseException) -> None:
    """Mark an unwrapped driver error as coming from the database (see ``is_database_error``)."""
    with contextlib.suppress(AttributeError):  # an exception type with __slots__
        setattr(error, DATABASE_ERROR_ATTR, True)


def _on_error(context: ExceptionContext) -> None:
    original = context.original_exception
    if context.sqlalchemy_exception is None:
        mark_database_error(original)
    if getattr(original, DURING_COMMIT_ATTR, False):
        error = context.sqlalchemy_exception or original
        COUNTERS.commit_failure(DatabaseErrorClassifier.classify(error).value)
    if isinstance(original, TimeoutError) and context.connection is not None:
        # the driver gave up waiting (asyncpg command_timeout): whether the server is
        # slow or gone, the connection's state is unknown; use a new one. Only this one:
        # the pool's other connections answered recently.
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = False


def track_errors(engine: AsyncEngine) -> None:
    """Mark the errors the engine's driver raises unwrapped, and those raised in COMMIT.

    SQLAlchemy's ``handle_error`` event marks statement errors SQLAlchemy does not wrap
    (asyncpg's ``command_timeout`` raises a bare ``TimeoutError``), and invalidates the
    connection whose statement the driver stopped waiting for; see :func:`track_commits`
    for COMMIT.
    """
    event.listen(engine.sync_engine, "handle_error", _on_error)
    track_commits(engine)


def track_commits(engine: AsyncEngine) -> None:
    """Mark errors raised while a COMMIT is in flight, so they classify as AMBIGUOUS.

    The engine's dialect (one per engine) sends the COMMIT through ``do_commit``; the
    error it raises is marked and SQLAlchemy wraps it as usual. A wrapper around that
    one method rather than engine events: listeners on an engine make every statement
    of every connection dispatch its (empty) execution events too.
    """
    dialect = engine.sync_engine.dialect
    do_commit = dialect.do_commit

    def do_commit_marking_errors(dbapi_connection: Any) -> None:
        try:
            do_commit(dbapi_connection)
        except BaseException as error:
            _mark(error)
            raise

    dialect.do_commit = do_commit_marking_errors  # type: ignore[method-assign]


def _mark(error: Any) -> None:
    if error is not None:
        with contextlib.suppress(AttributeError):  # an exception type with __slots__
            setattr(error, DURING_COMMIT_ATTR, True)
            setattr(error, DATABASE_ERROR_ATTR, True)
