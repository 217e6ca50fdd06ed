"""A pool queue that serves waiting checkouts in their order (first come, first served).

SQLAlchemy's ``AsyncAdaptedQueue`` wraps ``asyncio.Queue``, which is not fair: a returned
connection wakes the oldest waiter, but a checkout arriving before that waiter runs takes
the connection (SQLAlchemy 2.1 takes an idle one without awaiting), and the woken waiter
queues again at the back. Under a saturated pool some checkouts wait many times the
average, which is the tail of request latency and readiness probes that time out while
the database answers. Here a returned connection is handed to the oldest waiter
directly; it is queued only when nobody waits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import TypeVar

from sqlalchemy.util import await_only
from sqlalchemy.util import queue as sqla_queue

__all__ = ["FairQueue"]

_T = TypeVar("_T")


class FairQueue(sqla_queue.AsyncAdaptedQueue[_T]):
    """``AsyncAdaptedQueue`` handing each returned item to the checkout that waited longest."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: collections.deque[asyncio.Future[_T]] = collections.deque()

    def qsize(self) -> int:
        """Items queued (idle): none while a checkout waits."""
        return self._queue.qsize()

    def waiting(self) -> int:
        """Checkouts waiting for an item now."""
        return sum(not waiter.done() for waiter in self._waiters)

    def put_nowait(self, item: _T) -> None:
        """Give ``item`` to the oldest waiter; queue it when nobody waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            # a waiter of a loop closed meanwhile (its task is gone) cannot be woken
            if not waiter.done() and not waiter.get_loop().is_closed():
                waiter.set_result(item)
                return
        super().put_nowait(item)

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        """An item now, or (``block``) the next one returned within ``timeout`` seconds.

        Raises:
            sqlalchemy.util.queue.Empty: None now (not ``block``), or none in time.
        """
        try:
            return self.get_nowait()  # items are queued only while nobody waits
        except sqla_queue.Empty:
            if not block:
                raise
        waiter: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await_only(self._wait(waiter, timeout))
        except TimeoutError as error:
            raise sqla_queue.Empty() from error

    async def _wait(self, waiter: asyncio.Future[_T], timeout: float | None) -> _T:
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except BaseException:  # timed out or cancelled
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())  # handed over as this one gave up: the next
            raise
