"""Commit the request's transaction before the response status is sent.

advanced-alchemy's autocommit before-send hook also commits at the response start, but
a commit that fails is only logged at debug level and the response goes out unchanged:
the client gets a 2xx for data that was never stored. :class:`TransactionHandler` is
the before-send hook advanced-alchemy calls instead: it commits (2xx, and 3xx when
asked) or rolls back (anything else) and closes the session before the response start
goes out. A failed commit is rolled back, logged, and the response replaced by the
answer :mod:`litestar_bento_db.litestar.errors` gives (503 with ``Retry-After`` when the
database was unavailable or the outcome is unknown, 409 for a constraint, else 500).

A before-send hook rather than an ASGI middleware: it runs once per message, adds no
layer around the route, and releases the connection at the same point. The request's
session lives in the ASGI scope under this package's own key
(:func:`request_session`), created on first use by the session dependency.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from typing import Any, Final, cast

from litestar.constants import (
    HTTP_DISCONNECT,
    HTTP_RESPONSE_BODY,
    HTTP_RESPONSE_START,
    WEBSOCKET_CLOSE,
    WEBSOCKET_DISCONNECT,
)
from litestar.types import HTTPResponseStartEvent, Message, Scope
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from litestar_bento_db.litestar.errors import answer_for, log_answer

__all__ = [
    "RequestSessionClosedError",
    "TransactionHandler",
    "refuse_after_response",
    "request_session",
]

logger = logging.getLogger(__name__)

#: the ASGI scope key under which this package keeps per-request state
SCOPE_KEY: Final = "litestar_bento_db"
#: messages after which a request's session is no longer used (it is closed)
_SESSION_ENDS: Final = frozenset(
    {HTTP_RESPONSE_START, HTTP_DISCONNECT, WEBSOCKET_DISCONNECT, WEBSOCKET_CLOSE}
)


class RequestSessionClosedError(RuntimeError):
    """The request's session was used after the response started."""


_CLOSED_MESSAGE: Final = (
    "the request's session was used after the response started (in a streamed body?): "
    "its transaction was already committed or rolled back and its connection returned, "
    "so this work would never be committed. Open a unit of work where it runs instead, "
    "e.g. 'async with db_session_factory() as session, session.begin(): ...' "
    "(inject DbSessionFactory)"
)


_CLOSED: Final = "litestar_bento_db.closed_at_response_start"
#: headers that describe the body the replaced answer no longer has
_BODY_HEADERS: Final = frozenset({b"content-type", b"content-length", b"content-encoding"})


class _ClosedSyncSession:
    """Stands in for a closed request session's ``sync_session``: any use raises."""

    def __getattr__(self, name: str) -> Any:
        raise RequestSessionClosedError(_CLOSED_MESSAGE)


def _refuse_if_closed(session: Session, _instance: object) -> None:
    if session.info.get(_CLOSED):
        raise RequestSessionClosedError(_CLOSED_MESSAGE)


def refuse_after_response(maker: async_sessionmaker[Any]) -> None:
    """Make ``add()`` on a request session closed at the response start raise too.

    The async session's other methods go through its ``sync_session``, which the commit
    hook replaces; ``add``, ``add_all`` and ``merge`` reach the original one, whose
    ``before_attach`` event refuses them.
    """
    event.listen(sync_session_target(maker), "before_attach", _refuse_if_closed, propagate=True)


def sync_session_target(maker: async_sessionmaker[Any]) -> type[Session] | sessionmaker[Any]:
    """Where session events of ``maker``'s sessions are listened for.

    Its ``sync_session_class`` (a ``sessionmaker`` carrying advanced-alchemy's listeners,
    or a class), given a class of its own first when it has none.
    """
    target: type[Session] | sessionmaker[Any] | None = maker.kw.get("sync_session_class")
    if target is None:
        target = type("RequestSession", (Session,), {})
        maker.configure(sync_session_class=target)
    return target


def _state(scope: Scope) -> dict[str, Any]:
    return cast("dict[str, Any]", scope).setdefault(SCOPE_KEY, {})  # type: ignore[no-any-return]


def request_session(scope: Scope, key: str, factory: Callable[[], AsyncSession]) -> AsyncSession:
    """The request's session under ``key``, created with ``factory`` on first use."""
    state = _state(scope)
    session: AsyncSession | None = state.get(key)
    if session is None:
        session = state[key] = factory()
    return session


class TransactionHandler:
    """Before-send hook: commit or roll back, and close, the request's session.

    Args:
        session_scope_key: Where the request's session is kept (see :func:`request_session`).
        commit_on_redirect: Commit on 3xx responses too.
        retry_after: ``Retry-After`` seconds on a 503 after a failed commit.
        commit_statuses: The statuses that commit, in place of 2xx (and 3xx with
            ``commit_on_redirect``); empty: none (every transaction left open is rolled
            back).
    """

    def __init__(
        self,
        *,
        session_scope_key: str,
        commit_on_redirect: bool = False,
        retry_after: int = 1,
        commit_statuses: Collection[int] | None = None,
    ) -> None:
        self.session_scope_key = session_scope_key
        self.replacement_key = f"{session_scope_key}_replacement_body"
        self.commit_statuses: Collection[int] = (
            range(200, 400 if commit_on_redirect else 300)
            if commit_statuses is None
            else commit_statuses
        )
        self.retry_after = retry_after

    async def __call__(self, message: Message, scope: Scope) -> None:
        """Finish the session on the response start; swap the body of a replaced response."""
        state = cast("dict[str, Any] | None", cast("dict[str, Any]", scope).get(SCOPE_KEY))
        if state is None:  # no session in this request
            return
        if message["type"] == HTTP_RESPONSE_START:
            session: AsyncSession | None = state.pop(self.session_scope_key, None)
            if session is None:
                return
            try:
                error = await self._finish(session, message["status"])
            finally:
                await self._close(session)
            if error is not None:
                self._replace(message, error, scope)
        elif message["type"] == HTTP_RESPONSE_BODY:
            body: bytes | None = state.get(self.replacement_key)
            if body is not None:  # the handler's body belongs to the response we replaced
                message["body"] = body
                state[self.replacement_key] = b""
        elif message["type"] in _SESSION_ENDS:  # a request ending otherwise
            session = state.pop(self.session_scope_key, None)
            if session is not None:
                await self._close(session)

    async def _finish(self, session: AsyncSession, status: int) -> BaseException | None:
        if not session.in_transaction():
            return None
        if status not in self.commit_statuses:
            await _roll_back(session, "for an error status")
            return None
        try:
            await session.commit()
        except Exception as exc:  # answered with an error status below
            await _roll_back(session, "after a failed commit")
            return exc
        return None

    async def _close(self, session: AsyncSession) -> None:
        try:
            await session.close()
        except Exception:  # the connection may be gone; it is invalidated
            logger.debug("closing the request's session failed", exc_info=True)
        # whatever still holds the session (a streamed body) gets a clear error, not a
        # new transaction that nobody commits on a connection nobody returns
        session.sync_session.info[_CLOSED] = True
        session.sync_session = _ClosedSyncSession()  # type: ignore[assignment]

    def _replace(self, start: HTTPResponseStartEvent, error: BaseException, scope: Scope) -> None:
        answer = answer_for(error)
        method, path = str(scope.get("method", "")), scope["path"]
        log_answer(answer, error, method, path, "at COMMIT")
        body = json.dumps(answer.body()).encode()
        ours = {
            "content-type": "application/json",
            "content-length": str(len(body)),
            **{k.lower(): v for k, v in answer.headers(self.retry_after).items()},
        }
        # the other headers (CORS, cookies, request ids) stay: they are the app's
        kept = [
            (name, value)
            for name, value in start.get("headers", [])
            if name.lower() not in _BODY_HEADERS and name.decode("latin-1").lower() not in ours
        ]
        start["status"] = answer.status
        start["headers"] = [*kept, *((k.encode(), v.encode()) for k, v in ours.items())]
        _state(scope)[self.replacement_key] = body


async def _roll_back(session: AsyncSession, when: str) -> None:
    try:
        await session.rollback()
    except Exception:  # the connection may be gone; it is invalidated
        logger.debug("rollback %s failed", when, exc_info=True)
