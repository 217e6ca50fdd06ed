"""Commit the request's transaction before the response status is sent.

advanced-alchemy's autocommit hook commits while the response start message is
already on its way and only logs a failed commit at debug level: the client gets a
2xx for data that was never stored. This middleware holds the response start, commits
(2xx, and 3xx when asked) or rolls back (anything else), and sends the response only
after a successful commit. A failed commit is rolled back, logged at ERROR and answered
with 503 (transient, connection or ambiguous failure: ``Retry-After`` set) or 500, in
place of the handler's response.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from advanced_alchemy.extensions.litestar._utils import get_aa_scope_state
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncSession

from litestar_bento_db.resilience import DatabaseErrorClassifier, ErrorCategory

__all__ = ["TransactionMiddleware"]

logger = logging.getLogger(__name__)

_UNAVAILABLE = {
    ErrorCategory.TRANSIENT,
    ErrorCategory.CONNECTION,
    ErrorCategory.AMBIGUOUS,
    ErrorCategory.TIMEOUT,
}


class TransactionMiddleware:
    """ASGI middleware: commit or roll back the request's session before the status goes out."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        session_scope_key: str,
        commit_on_redirect: bool = False,
        retry_after: int = 1,
    ) -> None:
        self.app = app
        self.session_scope_key = session_scope_key
        self.commit_statuses = range(200, 400 if commit_on_redirect else 300)
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the route; commit or roll back when its response starts."""
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_after_commit(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start":
                session: AsyncSession | None = get_aa_scope_state(scope, self.session_scope_key)
                if session is not None:
                    error = await self._finish(session, message["status"])
                    if error is not None:
                        replaced = True
                        await self._send_error(send, error, scope)
                        return
            elif message["type"] == "http.response.body" and replaced:
                return  # the handler's body belongs to the response we replaced
            await send(message)

        await self.app(scope, receive, send_after_commit)

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

    async def _send_error(self, send: Send, error: BaseException, scope: Scope) -> None:
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
        start: Any = {"type": "http.response.start", "status": status, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})
