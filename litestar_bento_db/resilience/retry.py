"""Retry a whole unit of work on transient database errors.

A retry re-runs the caller's function from the start: it opens its own session and
transaction, so a retry never replays a single statement of a rolled-back transaction.
Attempts are bounded, delays grow exponentially up to a cap with full jitter, and a
:class:`RetryBudget` shared by all callers stops an outage from turning into a retry
storm.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from litestar_bento_db._counters import COUNTERS
from litestar_bento_db.resilience.classification import (
    DatabaseErrorClassifier,
    retryable_categories,
)
from litestar_bento_db.resilience.codes import ErrorCategory

__all__ = [
    "DEFAULT_RETRY_BUDGET",
    "Attempt",
    "OnRetry",
    "RetryBudget",
    "RetryConfig",
    "RetryableOperation",
    "retry_on_db_error",
    "retryable",
]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

OnRetry = Callable[[BaseException, int], Awaitable[None] | None]
"""Called before each retry with the error and the number of the attempt that failed."""


class RetryBudget:
    """A token bucket shared by callers, like gRPC retry throttling.

    Every retryable failure takes one token, every success gives back ``token_ratio``;
    retries are allowed only while more than half of ``max_tokens`` remain. Under a
    sustained outage retries stop after about ``max_tokens / 2`` failures and each call
    makes a single attempt, until successes refill the bucket.
    """

    def __init__(self, max_tokens: float = 100.0, token_ratio: float = 0.1) -> None:
        if max_tokens <= 0 or token_ratio <= 0:
            raise ValueError("max_tokens and token_ratio must be > 0")
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self._tokens = max_tokens
        self._lock = threading.Lock()

    @property
    def tokens(self) -> float:
        """Tokens left."""
        return self._tokens

    def record_success(self) -> None:
        """A unit of work succeeded."""
        with self._lock:
            self._tokens = min(self.max_tokens, self._tokens + self.token_ratio)

    def record_failure(self) -> None:
        """A unit of work failed with a retryable error."""
        with self._lock:
            self._tokens = max(0.0, self._tokens - 1)

    def can_retry(self) -> bool:
        """True while the budget allows another retry."""
        return self._tokens > self.max_tokens / 2

    def reset(self) -> None:
        """Refill the bucket."""
        with self._lock:
            self._tokens = self.max_tokens


DEFAULT_RETRY_BUDGET = RetryBudget()
"""The budget shared by every retry that does not name its own."""


@dataclass(frozen=True)
class RetryConfig:
    """How a unit of work is retried."""

    max_attempts: int = 3
    """Attempts in all, the first included."""
    base_delay: float = 0.1
    """Delay before the first retry, in seconds (before jitter)."""
    max_delay: float = 10.0
    """Cap on any delay, in seconds."""
    exponential_base: float = 2.0
    """Each delay is the previous one times this."""
    jitter: bool = True
    """Full jitter: each delay is drawn uniformly from 0 to the computed delay."""
    idempotent: bool = False
    """The operation may safely run twice: AMBIGUOUS errors (connection lost during
    COMMIT) are retried too."""
    retry_timeouts: bool = False
    """Also retry statements cancelled by the time limit (a slow query often stays slow)."""
    budget: RetryBudget | None = field(default=DEFAULT_RETRY_BUDGET, compare=False)
    """The shared retry budget; ``None`` for no budget."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: expected an integer >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("base_delay and max_delay must be >= 0")
        if self.exponential_base < 1:
            raise ValueError(f"exponential_base: expected >= 1, got {self.exponential_base}")

    @property
    def retryable_categories(self) -> frozenset[ErrorCategory]:
        """The categories this configuration retries."""
        return retryable_categories(idempotent=self.idempotent, retry_timeouts=self.retry_timeouts)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        capped = min(self.max_delay, self.base_delay * self.exponential_base ** (attempt - 1))
        return random.uniform(0, capped) if self.jitter else capped


async def _notify(on_retry: OnRetry | None, error: BaseException, attempt: int) -> None:
    if on_retry is not None:
        result = on_retry(error, attempt)
        if inspect.isawaitable(result):
            await result


def _decide(config: RetryConfig, error: BaseException, attempt: int, name: str) -> float | None:
    """The delay before the next attempt, or None to give up and raise ``error``."""
    if not isinstance(error, Exception):
        return None  # cancellation, KeyboardInterrupt: never retried
    category = DatabaseErrorClassifier.classify(error)
    if category not in config.retryable_categories:
        return None
    budget = config.budget
    if budget is not None:
        budget.record_failure()
    if attempt >= config.max_attempts:
        return None
    if budget is not None and not budget.can_retry():
        COUNTERS.budget_refusal()
        logger.warning(
            "%s: retry budget exhausted, not retrying %s error (%s)",
            name,
            category.value,
            type(error).__name__,
        )
        return None
    delay = config.delay(attempt)
    COUNTERS.retry(category.value)
    logger.warning(
        "%s: attempt %d/%d failed with %s error (%s, code %s); retrying in %.3fs",
        name,
        attempt,
        config.max_attempts,
        category.value,
        type(error).__name__,
        DatabaseErrorClassifier.error_code(error),
        delay,
    )
    return delay


def _succeeded(config: RetryConfig) -> None:
    if config.budget is not None:
        config.budget.record_success()


async def retry_on_db_error(
    func: Callable[..., Awaitable[R]],
    *args: Any,
    config: RetryConfig | None = None,
    on_retry: OnRetry | None = None,
    **kwargs: Any,
) -> R:
    """Run ``func(*args, **kwargs)``, re-running it whole on retryable database errors.

    Args:
        func: The unit of work: an async function that opens its own session and
            transaction, so that each attempt starts from scratch.
        *args: Positional arguments for ``func``.
        config: Attempts, backoff and budget; ``RetryConfig()`` when omitted.
        on_retry: Called (sync or async) with the error and the failed attempt's number
            before each retry.
        **kwargs: Keyword arguments for ``func``.

    Returns:
        What ``func`` returns.

    Raises:
        Exception: The last error, when it is not retryable, attempts are used up or
            the retry budget is spent.
    """
    config = config or RetryConfig()
    name = getattr(func, "__qualname__", repr(func))
    attempt = 1
    while True:
        try:
            result = await func(*args, **kwargs)
        except Exception as error:
            delay = _decide(config, error, attempt, name)
            if delay is None:
                raise
            await _notify(on_retry, error, attempt)
            await asyncio.sleep(delay)
            attempt += 1
        else:
            _succeeded(config)
            return result


def retryable(
    config: RetryConfig | None = None, *, on_retry: OnRetry | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate an async unit of work so that each call goes through :func:`retry_on_db_error`."""

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return await retry_on_db_error(func, *args, config=config, on_retry=on_retry, **kwargs)

        return wrapper

    return decorate


class Attempt:
    """One attempt of a :class:`RetryableOperation`: an async context manager."""

    def __init__(self, operation: RetryableOperation, number: int) -> None:
        self.operation = operation
        self.number = number
        """1 for the first attempt."""

    async def __aenter__(self) -> Attempt:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return await self.operation._finish(self, exc)


class RetryableOperation:
    """Retry a block of code: an attempt iterator, or a runner of callables.

    A plain ``async with`` cannot run its body twice, so the context-manager
    form becomes a loop over attempts; each attempt's body is the whole unit of work::

        async for attempt in RetryableOperation(config):
            async with attempt, session_factory() as session, session.begin():
                ...

    A retryable error inside ``async with attempt`` is swallowed and the loop runs the
    body again after the backoff delay; any other error, or the last one, propagates.
    ``await RetryableOperation(config).run(func, *args)`` is the callable form.
    """

    def __init__(self, config: RetryConfig | None = None, on_retry: OnRetry | None = None) -> None:
        self.config = config or RetryConfig()
        self.on_retry = on_retry
        self.attempts = 0
        """Attempts started so far."""
        self._done = False

    async def run(self, func: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``func`` with retries, as :func:`retry_on_db_error`."""
        return await retry_on_db_error(
            func, *args, config=self.config, on_retry=self.on_retry, **kwargs
        )

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        while not self._done:
            self.attempts += 1
            yield Attempt(self, self.attempts)

    async def _finish(self, attempt: Attempt, error: BaseException | None) -> bool:
        if error is None:
            self._done = True
            _succeeded(self.config)
            return False
        delay = _decide(self.config, error, attempt.number, "RetryableOperation")
        if delay is None:
            self._done = True
            return False
        await _notify(self.on_retry, error, attempt.number)
        await asyncio.sleep(delay)
        return True

    async def __aenter__(self) -> Any:
        raise TypeError(
            "RetryableOperation cannot retry an 'async with' body (it runs once); use "
            "'async for attempt in RetryableOperation(...): async with attempt: ...' "
            "or 'await RetryableOperation(...).run(func)'"
        )

    async def __aexit__(self, *exc_info: object) -> None:
        return None
