"""Commit the request's transaction before the response status is sent.

advanced-alchemy's autocommit hook commits while the response start message is
already on its way and only logs a failed commit at debug level: the client gets a
2xx for data that was never stored. :class:`TransactionHandler` is the before-send
hook advanced-alchemy calls instead: it commits (2xx, and 3xx when asked) or rolls back
(anything else) and closes the session *before* the response start goes out. A failed
commit is rolled back, logged at ERROR and the response is replaced by a 503
(transient, connection or ambiguous failure: ``Retry-After`` set) or a 500.

A before-send hook rather than an ASGI middleware: it runs once per message, adds no
layer around the route, and releases the connection at the same point.
"""

from __future__ import annotations

import json
import logging

from advanced_alchemy.extensions.litestar._utils import (
    delete_aa_scope_state,
    get_aa_scope_state,
    set_aa_scope_state,
)
from advanced_alchemy.extensions.litestar.plugins.init.config.common import (
    SESSION_TERMINUS_ASGI_EVENTS,
)
from litestar.types import HTTPResponseStartEvent, Message, Scope
from sqlalchemy.ext.asyncio import AsyncSession

from litestar_bento_db.resilience import DatabaseErrorClassifier, ErrorCategory

__all__ = ["TransactionHandler"]

logger = logging.getLogger(__name__)

_UNAVAILABLE = {
    ErrorCategory.TRANSIENT,
    ErrorCategory.CONNECTION,
    ErrorCategory.AMBIGUOUS,
    ErrorCategory.TIMEOUT,
}


class TransactionHandler:
    """Before-send hook: commit or roll back, and close, the request's session.

    Args:
        session_scope_key: Where advanced-alchemy keeps the request's session.
        commit_on_redirect: Commit on 3xx responses too.
        retry_after: ``Retry-After`` seconds on a 503 after a failed commit.
    """

    def __init__(
        self, *, session_scope_key: str, commit_on_redirect: bool = False, retry_after: int = 1
    ) -> None:
        self.session_scope_key = session_scope_key
        self.replacement_key = f"{session_scope_key}_replacement_body"
        self.commit_statuses = range(200, 400 if commit_on_redirect else 300)
        self.retry_after = retry_after

    async def __call__(self, message: Message, scope: Scope) -> None:
        """Finish the session on the response start; swap the body of a replaced response."""
        if message["type"] == "http.response.start":
            session: AsyncSession | None = get_aa_scope_state(scope, self.session_scope_key)
            if session is None:
                return
            try:
                error = await self._finish(session, message["status"])
            finally:
                await self._close(session, scope)
            if error is not None:
                self._replace(message, error, scope)
        elif message["type"] == "http.response.body":
            body: bytes | None = get_aa_scope_state(scope, self.replacement_key)
            if body is not None:  # the handler's body belongs to the response we replaced
                message["body"] = body
                set_aa_scope_state(scope, self.replacement_key, b"")
        elif message["type"] in SESSION_TERMINUS_ASGI_EVENTS:  # a request ending otherwise
            session = get_aa_scope_state(scope, self.session_scope_key)
            if session is not None:
                await self._close(session, scope)

    async def _finish(self, session: AsyncSession, status: int) -> BaseException | None:
        if not session.in_transaction():
            return None
        if status not in self.commit_statuses:
            await session.rollback()
            return None
        try:
            await session.commit()
        except Exception as exc:  # answered with an error status below
            try:
                await session.rollback()
            except Exception:  # the connection may be gone; it is invalidated
                logger.debug("rollback after a failed commit failed", exc_info=True)
            return exc
        return None

    async def _close(self, session: AsyncSession, scope: Scope) -> None:
        delete_aa_scope_state(scope, self.session_scope_key)
        try:
            await session.close()
        except Exception:  # the connection may be gone; it is invalidated
            logger.debug("closing the request's session failed", exc_info=True)

    def _replace(self, start: HTTPResponseStartEvent, error: BaseException, scope: Scope) -> None:
        category = DatabaseErrorClassifier.classify(error)
        unavailable = category in _UNAVAILABLE
        status = 503 if unavailable else 500
        logger.error(
            "commit failed for %s %s: %s error (%s, code %s); answered %d, transaction rolled back",
            scope.get("method"),
            scope.get("path"),
            category.value,
            type(error).__name__,
            DatabaseErrorClassifier.error_code(error),
            status,
        )
        detail = (
            "The database could not confirm the transaction; it was not applied."
            if category is not ErrorCategory.AMBIGUOUS
            else "The database connection was lost while committing; the outcome is unknown."
        )
        body = json.dumps({"status_code": status, "detail": detail}).encode()
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if unavailable:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        start["status"] = status
        start["headers"] = headers
        set_aa_scope_state(scope, self.replacement_key, body)
