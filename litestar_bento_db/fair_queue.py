"""A pool queue that serves waiting checkouts in their order (first come, first served).

SQLAlchemy's ``AsyncAdaptedQueue`` wraps ``asyncio.Queue``, which is not fair: a returned
connection wakes the oldest waiter, but a checkout arriving before that waiter runs takes
the connection (SQLAlchemy 2.1 takes an idle one without awaiting), and the woken waiter
queues again at the back. Under a saturated pool some checkouts wait many times the
average, which is the tail of request latency and readiness probes that time out while
the database answers. Here a returned connection is handed to the oldest waiter
directly; it is queued only when nobody waits. tests/test_fair_queue.py pins what this
relies on in SQLAlchemy's queue and pool (``put(item, False)`` calls ``put_nowait``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.util import await_only
from sqlalchemy.util import queue as sqla_queue

__all__ = ["FairQueue", "running_loop"]

_T = TypeVar("_T")


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class FairQueue(sqla_queue.AsyncAdaptedQueue[_T]):
    """``AsyncAdaptedQueue`` handing each returned item to the checkout that waited longest.

    Only waiters of the loop that returns the item are handed it directly; waiters of a
    closed loop are dropped (their tasks never run again).
    """

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: collections.deque[asyncio.Future[_T]] = collections.deque()
        self.give_back: Callable[[_T], None] = self.put_nowait
        """Takes an item handed to a waiter that was cancelled before it could use it (the
        pool sets its own return path: the item goes to the next waiter, or is queued,
        or closed when the queue is full or the pool disposed)."""

    def qsize(self) -> int:
        """Items queued (idle): none while a checkout of this loop waits."""
        return self._queue.qsize()

    def waiting(self) -> int:
        """Checkouts waiting for an item now."""
        return sum(not waiter.done() for waiter in self._waiters)

    def _oldest_waiter(self) -> asyncio.Future[_T] | None:
        """The oldest waiter of the running loop, taken off the list; closed loops' dropped."""
        running, waiters = running_loop(), self._waiters
        others: list[asyncio.Future[_T]] = []  # waiters of other loops, kept in their order
        found = None
        while waiters and found is None:
            waiter = waiters.popleft()
            loop = waiter.get_loop()
            if waiter.done() or loop.is_closed():
                continue
            if loop is running:
                found = waiter
            else:
                others.append(waiter)
        waiters.extendleft(reversed(others))
        return found

    def put_nowait(self, item: _T) -> None:
        """Give ``item`` to the oldest waiter; queue it when none of this loop waits."""
        waiter = self._oldest_waiter()
        if waiter is not None:
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
        handed: list[_T] = []
        try:
            # the waiter is registered inside _wait: if await_only refuses (no greenlet),
            # no waiter is left behind to swallow the next item
            return await_only(self._wait(timeout, handed))
        except TimeoutError as error:
            raise sqla_queue.Empty() from error
        finally:
            for item in handed:  # cancelled after an item was handed to it (here, in
                self.give_back(item)  # the greenlet: the pool's return path may do I/O)

    async def _wait(self, timeout: float | None, handed: list[_T]) -> _T:
        waiter: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return waiter.result()  # handed over as the timeout fell: it came in time
            raise
        except BaseException:  # cancelled
            if waiter.done() and not waiter.cancelled():
                handed.append(waiter.result())
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
