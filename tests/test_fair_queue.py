"""Waiting checkouts are served in their order: a returned connection goes to the oldest.

``asyncio.Queue`` (under SQLAlchemy's pool) lets a checkout that asks while the woken
waiter has not run yet take the connection, and the waiter queues again at the back.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util import queue as sqla_queue

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from litestar_bento_db.fair_queue import FairQueue
from litestar_bento_db.pool import LoopBoundPool


async def _get(queue: sqla_queue.AsyncAdaptedQueue[str], timeout: float = 5) -> str:
    return await greenlet_spawn(queue.get, True, timeout)


async def test_an_item_goes_to_the_oldest_waiter_not_to_a_later_arrival() -> None:
    queue: FairQueue[str] = FairQueue(2)
    oldest = asyncio.ensure_future(_get(queue))
    await asyncio.sleep(0)  # it waits
    later = asyncio.ensure_future(_get(queue))  # scheduled before the oldest wakes up
    queue.put_nowait("first")
    queue.put_nowait("second")
    assert await oldest == "first"
    assert await later == "second"
    assert queue.qsize() == 0


async def test_an_item_handed_to_a_waiter_that_gives_up_goes_to_the_next() -> None:
    queue: FairQueue[str] = FairQueue(2)
    gives_up = asyncio.ensure_future(_get(queue))
    await asyncio.sleep(0)
    next_one = asyncio.ensure_future(_get(queue))
    await asyncio.sleep(0)
    queue.put_nowait("item")  # handed to the first waiter, which is cancelled before it runs
    gives_up.cancel()
    assert await next_one == "item"
    with pytest.raises(asyncio.CancelledError):
        await gives_up
    queue.put_nowait("idle")  # nobody waits: queued
    assert queue.qsize() == 1
    assert queue.waiting() == 0


async def test_a_waiter_that_times_out_raises_empty_and_leaves_the_queue() -> None:
    queue: FairQueue[str] = FairQueue(1)
    with pytest.raises(sqla_queue.Empty):
        await _get(queue, timeout=0.05)
    assert queue.waiting() == 0
    queue.put_nowait("item")
    assert queue.qsize() == 1  # not handed to the waiter that left
    assert queue.get(False) == "item"


async def test_a_checkout_arriving_as_a_connection_is_returned_waits_its_turn(
    server_backend: str, server_url: str
) -> None:
    """The later checkout runs before the waiter wakes up, and still comes second."""
    config = DatabaseConfig(url=server_url, pool_size=1, max_overflow=0, pool_timeout=10)
    engine = create_async_engine_from_config(config)
    served: list[str] = []
    later: list[asyncio.Future[None]] = []

    async def take(name: str) -> None:
        async with engine.connect() as connection:
            served.append(name)
            await connection.execute(text("SELECT 1"))

    def checkin(*_: object) -> None:  # just before the pool takes the connection back
        if not later:
            later.append(asyncio.ensure_future(take("later")))

    event.listen(engine.sync_engine, "checkin", checkin)
    try:
        async with engine.connect():
            first = asyncio.ensure_future(take("first"))
            await asyncio.sleep(0.2)  # waiting
        await asyncio.gather(first, *later)
    finally:
        await engine.dispose()
    assert served == ["first", "later"]


def test_a_waiter_whose_loop_was_closed_is_passed_over() -> None:
    """A checkout left waiting when its loop closed: the item is queued, not lost."""
    queue: FairQueue[str] = FairQueue(1)
    loop = asyncio.new_event_loop()

    async def start_waiting() -> asyncio.Future[str]:
        waiting = asyncio.ensure_future(_get(queue))
        await asyncio.sleep(0)
        return waiting

    waiting = loop.run_until_complete(start_waiting())
    loop.close()  # the waiter's task never runs again
    queue.put_nowait("item")  # from elsewhere (another loop, a thread's cleanup)
    assert queue.qsize() == 1
    assert queue.waiting() == 0
    assert not waiting.done()


async def test_an_item_a_cancelled_waiter_cannot_pass_on_goes_to_give_back() -> None:
    """Handed over, the waiter cancelled, nobody waiting and the queue full: not lost."""
    queue: FairQueue[str] = FairQueue(1)
    given: list[str] = []
    queue.give_back = given.append  # the pool's return path closes what does not fit
    waiter = asyncio.ensure_future(_get(queue))
    await asyncio.sleep(0)
    queue.put_nowait("handed")
    queue.put_nowait("queued")  # nobody waits any more: the queue is full
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert given == ["handed"]
    assert queue.get(False) == "queued"


def test_a_get_refused_outside_a_greenlet_leaves_no_waiter_behind() -> None:
    queue: FairQueue[str] = FairQueue(1)

    async def get_without_greenlet() -> None:
        queue.get(True, 1)  # a sync checkout called from async code

    with pytest.raises(MissingGreenlet):
        asyncio.run(get_without_greenlet())
    queue.put_nowait("item")
    assert queue.qsize() == 1


async def test_a_checkout_cancelled_as_it_is_handed_a_connection_returns_it(
    server_backend: str, server_url: str
) -> None:
    config = DatabaseConfig(url=server_url, pool_size=1, max_overflow=0, pool_timeout=2)
    engine = create_async_engine_from_config(config)
    cancelled: list[asyncio.Future[None]] = []

    async def take() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    def checkin(*_: object) -> None:  # runs before the waiter is handed the connection
        if cancelled:
            asyncio.get_running_loop().call_soon(cancelled[0].cancel)

    event.listen(engine.sync_engine, "checkin", checkin)
    try:
        async with engine.connect():
            cancelled.append(asyncio.ensure_future(take()))
            await asyncio.sleep(0.2)  # waiting
        with pytest.raises(asyncio.CancelledError):
            await cancelled[0]
        cancelled.clear()
        await asyncio.wait_for(take(), 1)  # the connection came back to the pool
        pool = engine.pool
        assert isinstance(pool, LoopBoundPool)
        assert pool.checkedout() == 0
    finally:
        await engine.dispose()
