"""Classify database errors by what the driver reports, through SQLAlchemy's wrapping.

The decision rests on the code each driver's adapter finds
(:mod:`litestar_bento_db.drivers`: PostgreSQL's SQLSTATE, MySQL's error number, SQLite's
result code), SQLAlchemy's ``connection_invalidated`` and pool ``TimeoutError``, and
``OSError`` at connect time; never on class names (SQLAlchemy raises the same
``DBAPIError`` for a PostgreSQL deadlock and a wrong password) and never on message text
alone (the one refinement by message, ``POSTGRES_REFINEMENTS``, applies within its code;
psycopg's connection failures, which libpq reports without a SQLSTATE, are read by its
adapter).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import ExceptionContext

from litestar_bento_db._counters import COUNTERS
from litestar_bento_db.drivers import Reported, driver_of_error
from litestar_bento_db.resilience.codes import (
    MYSQL_ERRNOS,
    MYSQL_REFINEMENTS,
    POSTGRES_REFINEMENTS,
    POSTGRES_SQLSTATE_CLASSES,
    POSTGRES_SQLSTATES,
    SQLITE_CODES,
    Code,
    ErrorCategory,
)
from litestar_bento_db.resilience.policy import policy_of, retryable_categories

__all__ = [
    "DatabaseErrorClassifier",
    "ErrorCategory",
    "Reported",
    "describe_error",
    "error_chain",
    "is_database_error",
    "is_database_error_retryable",
    "is_driver_error",
    "mark_commit_error",
    "mark_database_error",
    "mark_tls_failure",
    "on_handle_error",
    "reported",
    "retryable_categories",
    "tls_failure_of",
]

#: attribute set on an exception raised while a COMMIT was in flight
DURING_COMMIT_ATTR = "_bento_during_commit"
#: attribute set on a driver exception that reached the caller unwrapped (asyncpg's
#: ``TimeoutError`` and ``OSError`` at connect or from ``command_timeout``)
DATABASE_ERROR_ATTR = "_bento_database_error"
#: attribute set on an error a connection attempt raised because of TLS: the reason
#: (set by :mod:`litestar_bento_db.connector`, which asks the driver's adapter)
TLS_FAILURE_ATTR = "_bento_tls_failure"


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


def is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` itself is an error class of a supported driver."""
    return driver_of_error(exc) is not None


def reported(exc: BaseException) -> Reported | None:
    """The first code a driver reported in the exception chain, if any."""
    for current in error_chain(exc):
        driver = driver_of_error(current)
        report = driver.report(current) if driver is not None else None
        if report is not None:
            return report
    return None


def mark_tls_failure(error: BaseException, reason: str) -> None:
    """Mark ``error`` as a TLS failure: PERMANENT, and ``reason`` is what readiness says."""
    with contextlib.suppress(AttributeError):  # an exception type with __slots__
        setattr(error, TLS_FAILURE_ATTR, reason)
        setattr(error, DATABASE_ERROR_ATTR, True)


def tls_failure_of(exc: BaseException) -> str | None:
    """The TLS failure's reason, when a connection attempt in the chain failed on TLS."""
    reasons = (getattr(error, TLS_FAILURE_ATTR, None) for error in error_chain(exc))
    return next((reason for reason in reasons if reason is not None), None)


def describe_error(exc: BaseException) -> str:
    """A short reason for output: a TLS failure's, else the innermost error's class name.

    Never a message: driver messages may carry hosts, users or SQL.
    """
    reason = tls_failure_of(exc)
    if reason is not None:
        return reason
    name = type(exc).__name__
    for current in error_chain(exc):
        if isinstance(current, Exception):  # not the CancelledError under a timeout
            name = type(current).__name__
    return name


def code_entry(report: Reported) -> Code | None:
    """The code table's entry for what the database reported, if the code is listed."""
    if report.database == "mysql":
        return MYSQL_ERRNOS.get(int(report.code))
    if report.database == "sqlite":
        return SQLITE_CODES.get(int(report.code))
    return POSTGRES_SQLSTATES.get(str(report.code))


def _category_of(report: Reported) -> ErrorCategory | None:
    if report.database == "postgresql":
        sqlstate = str(report.code)
        for (refined_code, prefix), refined in POSTGRES_REFINEMENTS.items():
            if sqlstate == refined_code and report.message.startswith(prefix):
                return refined
        entry = code_entry(report)
        if entry is None:
            return POSTGRES_SQLSTATE_CLASSES.get(sqlstate[:2])
        return entry.category
    if report.database == "mysql":
        for (refined_errno, needle), refined in MYSQL_REFINEMENTS.items():
            if int(report.code) == refined_errno and needle in report.message:
                return refined
    entry = code_entry(report)
    return entry.category if entry else None


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
        this package mark errors raised in COMMIT: :mod:`litestar_bento_db.instrumentation`).
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
        if tls_failure_of(exc) is not None:  # retrying cannot fix a certificate
            return ErrorCategory.PERMANENT
        report = reported(exc)
        by_code = _category_of(report) if report else None
        if by_code is not None:
            return by_code
        # anywhere in the chain: advanced-alchemy's repositories re-raise a lost
        # connection as their own IntegrityError (any StatementError is one to them)
        for error in error_chain(exc):
            if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
                return ErrorCategory.CONNECTION
            if isinstance(error, sa_exc.DisconnectionError):
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
        for error in error_chain(exc)
    )


def mark_database_error(error: BaseException) -> None:
    """Mark an unwrapped driver error as coming from the database (see ``is_database_error``)."""
    with contextlib.suppress(AttributeError):  # an exception type with __slots__
        setattr(error, DATABASE_ERROR_ATTR, True)


def on_handle_error(context: ExceptionContext) -> None:
    """SQLAlchemy's ``handle_error`` event for every engine built here.

    Marks the errors SQLAlchemy does not wrap (asyncpg's ``command_timeout`` raises a
    bare ``TimeoutError``) as database errors, counts failed COMMITs, and replaces the
    connection when its category's policy says its state is unknown afterwards (lost,
    or a statement the driver stopped waiting for), even where SQLAlchemy saw no
    disconnect. Only that connection: the pool's others answered recently.
    """
    original = context.original_exception
    if context.sqlalchemy_exception is None:
        mark_database_error(original)
    error = context.sqlalchemy_exception or original
    category = DatabaseErrorClassifier.classify(error)
    if getattr(original, DURING_COMMIT_ATTR, False):
        COUNTERS.commit_failure(category.value)
    if context.connection is None or context.is_disconnect:
        return
    replaces = policy_of(category).replaces_connection
    if replaces == "yes" or (replaces == "unanswered" and reported(error) is None):
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = False


def mark_commit_error(error: BaseException) -> None:
    """Mark an error raised while a COMMIT was in flight.

    A lost connection then classifies AMBIGUOUS (:meth:`DatabaseErrorClassifier.classify`).
    """
    with contextlib.suppress(AttributeError):  # an exception type with __slots__
        setattr(error, DURING_COMMIT_ATTR, True)
        setattr(error, DATABASE_ERROR_ATTR, True)
