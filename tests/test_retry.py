"""Whole-transaction retries against real contention and real outages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from litestar_bento_db import (
    DatabaseConfig,
    create_async_engine_from_config,
    create_async_session_factory,
)
from litestar_bento_db.resilience import (
    DatabaseErrorClassifier,
    ErrorCategory,
    RetryableOperation,
    RetryBudget,
    RetryConfig,
    retry_on_db_error,
    retryable,
)
from tests.conftest import PG_DRIVER, PG_SCHEME, SECRET

FAST = RetryConfig(max_attempts=30, base_delay=0.005, max_delay=0.05, budget=RetryBudget())


@pytest.fixture
async def accounts(server_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine_from_config(DatabaseConfig(url=server_url, pool_size=6))
    async with engine.begin() as c:
        await c.execute(text("DROP TABLE IF EXISTS bento_acct"))
        await c.execute(text("CREATE TABLE bento_acct (id int PRIMARY KEY, balance int NOT NULL)"))
        await c.execute(text("INSERT INTO bento_acct VALUES (1, 0), (2, 0)"))
    yield engine
    await engine.dispose()


async def _balances(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as c:
        rows = await c.execute(text("SELECT balance FROM bento_acct ORDER BY id"))
        return [int(r[0]) for r in rows]


@pytest.mark.parametrize("server_backend", ["postgresql"])
async def test_serializable_workers_reach_the_right_total(accounts: AsyncEngine) -> None:
    factory = async_sessionmaker(accounts.execution_options(isolation_level="SERIALIZABLE"))
    retries: list[ErrorCategory] = []

    async def deposit() -> None:
        async with factory() as session, session.begin():
            balance = await session.execute(text("SELECT balance FROM bento_acct WHERE id = 1"))
            current = int(balance.scalar_one())
            await asyncio.sleep(0.005)
            await session.execute(
                text("UPDATE bento_acct SET balance = :b WHERE id = 1"), {"b": current + 1}
            )

    def on_retry(error: BaseException, attempt: int) -> None:
        retries.append(DatabaseErrorClassifier.classify(error))

    async def worker() -> None:
        for _ in range(10):
            await retry_on_db_error(deposit, config=FAST, on_retry=on_retry)

    await asyncio.gather(worker(), worker())
    assert await _balances(accounts) == [20, 0]  # no lost update
    assert retries, "the workers never collided; the test proves nothing"
    assert set(retries) == {ErrorCategory.TRANSIENT}


async def test_opposite_lock_order_workers_finish(accounts: AsyncEngine) -> None:
    factory = create_async_session_factory(accounts)
    codes: list[object] = []
    deadlock_setup = (
        "SET deadlock_timeout = '50ms'" if accounts.dialect.name == "postgresql" else "SELECT 1"
    )

    async def transfer(first: int, second: int) -> None:
        async with factory() as session, session.begin():
            await session.execute(text(deadlock_setup))
            for account in (first, second):
                await session.execute(
                    text("UPDATE bento_acct SET balance = balance + 1 WHERE id = :id"),
                    {"id": account},
                )
                await asyncio.sleep(0.02)

    def on_retry(error: BaseException, attempt: int) -> None:
        codes.append(DatabaseErrorClassifier.error_code(error))

    async def worker(first: int, second: int) -> None:
        for _ in range(5):
            await retry_on_db_error(transfer, first, second, config=FAST, on_retry=on_retry)

    await asyncio.gather(worker(1, 2), worker(2, 1))
    assert await _balances(accounts) == [10, 10]
    assert codes, "no deadlock happened; the test proves nothing"
    assert set(codes) <= {"40P01", 1213}


async def test_attempt_iterator_reruns_the_whole_block(accounts: AsyncEngine) -> None:
    factory = create_async_session_factory(accounts)
    seen: list[int] = []
    blocker_started = asyncio.Event()
    release = asyncio.Event()

    async def blocker() -> None:
        async with factory() as session, session.begin():
            await session.execute(
                text("UPDATE bento_acct SET balance = balance + 100 WHERE id = 2")
            )
            blocker_started.set()
            await release.wait()
            await session.execute(
                text("UPDATE bento_acct SET balance = balance + 100 WHERE id = 1")
            )

    task = asyncio.ensure_future(blocker())
    await blocker_started.wait()
    operation = RetryableOperation(FAST)
    async for attempt in operation:
        async with attempt, factory() as session, session.begin():
            seen.append(attempt.number)
            await session.execute(text("UPDATE bento_acct SET balance = balance + 1 WHERE id = 1"))
            if attempt.number == 1:
                if accounts.dialect.name == "postgresql":
                    await session.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
                release.set()
                await asyncio.sleep(0.05)
            await session.execute(text("UPDATE bento_acct SET balance = balance + 1 WHERE id = 2"))
    await asyncio.gather(task, return_exceptions=True)
    final = await _balances(accounts)
    assert len(seen) >= 2
    assert seen == list(range(1, len(seen) + 1))
    # our block committed exactly once (+1 each), whatever happened to the blocker
    assert final[0] % 100 == 1
    assert final[1] % 100 == 1


async def test_permanent_error_is_raised_after_one_attempt(server_url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=server_url))
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        async with engine.connect() as c:
            await c.execute(text("SELECT * FROM bento_table_that_does_not_exist"))

    with pytest.raises(ProgrammingError):
        await retry_on_db_error(broken, config=FAST)
    await engine.dispose()
    assert calls == 1


async def test_ambiguous_commit_retried_only_when_idempotent(server_url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=server_url))
    kill = "SELECT pg_terminate_backend(:id)" if engine.dialect.name == "postgresql" else "KILL :id"
    who = (
        "SELECT pg_backend_pid()"
        if engine.dialect.name == "postgresql"
        else "SELECT CONNECTION_ID()"
    )
    calls = 0

    async def lose_commit() -> None:
        nonlocal calls
        calls += 1
        async with engine.connect() as victim:
            if calls > 1:
                return
            victim_id = (await victim.execute(text(who))).scalar_one()
            async with engine.connect() as admin:
                await admin.execute(text(kill), {"id": victim_id})
            await asyncio.sleep(0.2)
            await victim.commit()

    with pytest.raises(Exception) as caught:  # noqa: PT011
        await retry_on_db_error(lose_commit, config=FAST)
    assert DatabaseErrorClassifier.classify(caught.value) is ErrorCategory.AMBIGUOUS
    assert calls == 1
    calls = 0
    idempotent = RetryConfig(max_attempts=3, base_delay=0, idempotent=True, budget=None)
    await retry_on_db_error(lose_commit, config=idempotent)
    assert calls == 2
    await engine.dispose()


async def test_budget_stops_retries_during_an_outage() -> None:
    engine = create_async_engine_from_config(
        DatabaseConfig(url=f"{PG_SCHEME}://u:{SECRET}@127.0.0.1:1/d")
    )
    budget = RetryBudget(max_tokens=10, token_ratio=0.1)
    config = RetryConfig(max_attempts=5, base_delay=0, jitter=False, budget=budget)
    attempts = 0

    async def query() -> None:
        nonlocal attempts
        attempts += 1
        async with engine.connect() as c:
            await c.execute(text("SELECT 1"))

    for _ in range(50):
        # asyncpg raises the OSError itself; psycopg reports libpq's refusal
        with pytest.raises(ConnectionRefusedError if PG_DRIVER == "asyncpg" else OperationalError):
            await retry_on_db_error(query, config=config)
    await engine.dispose()
    # without a budget: 50 calls x 5 attempts = 250; with it, retries stop once
    # half the tokens are gone and every later call makes one attempt
    assert attempts <= 50 + 5
    assert not budget.can_retry()


def test_budget_refills_with_successes() -> None:
    budget = RetryBudget(max_tokens=10, token_ratio=0.5)
    for _ in range(6):
        budget.record_failure()
    assert not budget.can_retry()
    for _ in range(3):
        budget.record_success()
    assert budget.can_retry()


async def test_retries_are_logged_without_parameters(
    server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_async_engine_from_config(
        DatabaseConfig(url=server_url, pool_size=1, max_overflow=0, pool_timeout=0.05)
    )
    attempts = 0

    async def exhausted(secret_param: str) -> None:
        nonlocal attempts
        attempts += 1
        async with engine.connect() as c:
            await c.execute(text("SELECT :p"), {"p": secret_param})

    config = RetryConfig(max_attempts=3, base_delay=0, budget=None)
    async with engine.connect():  # hold the only connection
        with pytest.raises(Exception, match="QueuePool limit"):
            await retry_on_db_error(exhausted, SECRET, config=config)
    await engine.dispose()
    retries = [r for r in caplog.records if r.levelno == logging.WARNING and "attempt" in r.message]
    assert attempts == 3
    assert [r.message.split("attempt ")[1][:3] for r in retries] == ["1/3", "2/3"]
    assert all("transient error" in r.message for r in retries)
    assert SECRET not in caplog.text


async def test_decorator_and_backoff() -> None:
    delays = [
        RetryConfig(base_delay=0.1, max_delay=0.5, jitter=False).delay(n) for n in (1, 2, 3, 4, 5)
    ]
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5]
    jittered = RetryConfig(base_delay=0.1, max_delay=0.5).delay(3)
    assert 0 <= jittered <= 0.4

    calls = 0

    @retryable(RetryConfig(max_attempts=3, base_delay=0, budget=None))
    async def flaky(value: int) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionResetError("peer reset")
        return value

    assert await flaky(7) == 7
    assert calls == 3


async def test_context_manager_form_is_refused_clearly() -> None:
    with pytest.raises(TypeError, match="async for attempt in RetryableOperation"):
        async with RetryableOperation():
            pass


async def test_run_form(server_url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=server_url))
    factory: async_sessionmaker[AsyncSession] = create_async_session_factory(engine)

    async def one() -> int:
        async with factory() as session:
            return int((await session.execute(text("SELECT 1"))).scalar_one())

    assert await RetryableOperation().run(one) == 1
    await engine.dispose()
