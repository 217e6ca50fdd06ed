"""Answers to database errors raised inside a request, by what the database reported.

- transient error, connection lost, statement timeout, pool exhausted, retries spent:
  503 with ``Retry-After``;
- connection lost during COMMIT (the outcome is unknown): 503 with ``Retry-After``,
  saying so;
- unique, foreign-key or check violation: 409 naming the constraint;
- anything else: 500.

Bodies have Litestar's error shape (``status_code``, ``detail``, ``extra``) and never
carry SQL, parameters, values, URLs or passwords. Each answer is logged once: WARNING
for a 503, INFO for a 409, ERROR for a 500, with the category and the driver's code.
The same answers serve the exception handlers (errors in handlers, dependencies,
repositories) and the commit hook (errors at COMMIT).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Final

from advanced_alchemy.exceptions import RepositoryError
from advanced_alchemy.extensions.litestar.exception_handler import exception_to_http_response
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.exceptions.responses import create_debug_response, create_exception_response
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import SQLAlchemyError

from litestar_bento_db.resilience import (
    DatabaseErrorClassifier,
    ErrorCategory,
    constraint_violation,
    is_database_error,
)
from litestar_bento_db.resilience.policy import policy_of

__all__ = ["ErrorAnswer", "answer_for", "database_exception_handlers", "log_answer"]

logger = logging.getLogger(__name__)

_KIND_NAMES: Final = {"unique": "unique", "foreign_key": "foreign key", "check": "check"}


@dataclass(frozen=True)
class ErrorAnswer:
    """How a database error is answered."""

    status: int
    detail: str
    category: ErrorCategory
    code: str | int | None
    """The driver's code (SQLSTATE, error number, SQLite code), for the log."""
    extra: dict[str, Any] = field(default_factory=dict)

    def headers(self, retry_after: int) -> dict[str, str]:
        """``Retry-After`` on a 503."""
        return {"Retry-After": str(retry_after)} if self.status == 503 else {}

    def body(self) -> dict[str, Any]:
        """Litestar's error shape."""
        body: dict[str, Any] = {"status_code": self.status, "detail": self.detail}
        if self.extra:
            body["extra"] = self.extra
        return body


def answer_for(exc: BaseException) -> ErrorAnswer:
    """The answer to a database error: its category's policy, 409 for a violation."""
    category = DatabaseErrorClassifier.classify(exc)
    code = DatabaseErrorClassifier.error_code(exc)
    policy = policy_of(category)
    if policy.status == 503:
        return ErrorAnswer(503, policy.detail or "Service Unavailable", category, code)
    violation = constraint_violation(exc)
    if violation is not None:
        kind = _KIND_NAMES[violation.kind]
        named = f" {violation.name!r}" if violation.name else ""
        detail = f"The request conflicts with the {kind} constraint{named}."
        extra = {"constraint": violation.name, "constraint_kind": violation.kind}
        return ErrorAnswer(409, detail, category, code, extra)
    return ErrorAnswer(500, "Internal Server Error", category, code)


def log_answer(answer: ErrorAnswer, exc: BaseException, method: str, path: str, when: str) -> None:
    """Log an answered database error once (no message text: it may carry values)."""
    level = {503: logging.WARNING, 409: logging.INFO}.get(answer.status, logging.ERROR)
    logger.log(
        level,
        "database error %s for %s %s: %s (%s, code %s); answered %d",
        when,
        method,
        path,
        answer.category.value,
        type(exc).__name__,
        answer.code,
        answer.status,
    )


@dataclass(frozen=True)
class _Handler:
    """An exception handler for database errors; other errors keep their usual answer."""

    retry_after: int
    fallback: Any = None
    """The handler for errors of this type that are not database errors."""

    def __call__(self, request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        if not is_database_error(exc):
            if self.fallback is not None:
                return self.fallback(request, exc)  # type: ignore[no-any-return]
            if request.app.debug:
                return create_debug_response(request, exc)
            return create_exception_response(request, exc)
        answer = answer_for(exc)
        log_answer(answer, exc, request.method, request.url.path, "in the request")
        http_exc = HTTPException(
            status_code=answer.status,
            detail=answer.detail,
            headers=answer.headers(self.retry_after),
            extra=answer.extra or None,
        )
        return create_exception_response(request, http_exc)


def database_exception_handlers(
    retry_after: int, existing: ExceptionHandlersMap
) -> ExceptionHandlersMap:
    """The handlers to add to an app that has ``existing`` ones (those win).

    SQLAlchemy's errors, advanced-alchemy's repository errors (answered by its own handler
    when no database error is behind them) and ``OSError`` (database connections only:
    asyncpg raises ``OSError``/``TimeoutError`` unwrapped). A type the app already maps,
    or whose base it maps, is left to the app.
    """
    handlers: dict[type[Exception], Any] = {
        SQLAlchemyError: _Handler(retry_after),
        RepositoryError: _Handler(retry_after, exception_to_http_response),
        OSError: _Handler(retry_after),
    }
    mapped = [key for key in existing if isinstance(key, type)]
    return {
        exc_type: handler
        for exc_type, handler in handlers.items()
        if not any(issubclass(exc_type, known) for known in mapped)
    }
