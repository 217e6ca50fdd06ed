"""Leak detection: a connection held longer than a threshold is reported once.

The WARNING names the request (when the Litestar integration set :data:`CURRENT_ROUTE`)
and the application's frames that checked the connection out; an INFO follows when it
comes back. Costs nothing when off (no listener is registered); when on, each checkout
records where it came from and arms a timer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

import greenlet
from sqlalchemy import Engine, event
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

__all__ = ["CURRENT_ROUTE", "watch_leaks"]

logger = logging.getLogger("litestar_bento_db.leaks")

CURRENT_ROUTE: ContextVar[str | None] = ContextVar("litestar_bento_db_route", default=None)
"""The request being served (``"GET /orders/{id} (get_order)"``), for leak reports."""

_KEY: Final = "bento.leak"
_SKIP: Final = (
    "/sqlalchemy/",
    "/asyncio/",
    "/litestar/",
    "/anyio/",
    "/advanced_alchemy/",
    "/litestar_bento_db/",
    "<frozen",
)


@dataclass
class _Checkout:
    route: str | None
    where: list[str]
    taken: float
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    reported: bool = False


def _taken_at(limit: int = 8) -> list[str]:
    """``file:line in function`` of the caller's frames, outside the libraries.

    Inside SQLAlchemy's asyncio greenlet the application's frames (the handler awaiting
    the session) belong to the parent greenlet, suspended where it switched to this one.
    """
    parent = greenlet.getcurrent().parent
    frame = parent.gr_frame if parent is not None else None
    frames = traceback.StackSummary.extract(traceback.walk_stack(frame), lookup_lines=False)
    places = [
        f"{summary.filename}:{summary.lineno} in {summary.name}"
        for summary in reversed(frames)  # walk_stack goes from the innermost frame out
        if not any(part in summary.filename for part in _SKIP)
    ]
    return places[-limit:]


def _report(checkout: _Checkout, threshold: float) -> None:
    checkout.reported = True
    logger.warning(
        "connection checked out for more than %.1f s and not returned (%s); taken at:\n  %s",
        threshold,
        checkout.route or "outside a request",
        "\n  ".join(checkout.where) or "(unknown)",
    )


def watch_leaks(engine: Engine, threshold: float) -> None:
    """Report ``engine``'s connections checked out longer than ``threshold`` seconds."""

    def checkout(_dbapi: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        taken = _Checkout(CURRENT_ROUTE.get(), _taken_at(), time.monotonic())
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        taken.timer = loop.call_later(threshold, _report, taken, threshold)
        record.info[_KEY] = taken

    def returned(_dbapi: Any, record: ConnectionPoolEntry) -> None:
        taken: _Checkout | None = record.info.pop(_KEY, None)
        if taken is None:
            return
        if taken.timer is not None:
            taken.timer.cancel()
        if taken.reported:
            logger.info(
                "connection reported as held too long came back after %.1f s (%s)",
                time.monotonic() - taken.taken,
                taken.route or "outside a request",
            )

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", returned)
    event.listen(engine, "detach", returned)
