"""What each :class:`ErrorCategory` means in practice, in one table.

Whether an error of the category is worth running the unit of work again, what a
request that raised it is answered, and whether its connection is replaced. Retries
(:mod:`~litestar_bento_db.resilience.retry`), the Litestar answers and the engines'
error hook all read :data:`POLICIES`; a new category is one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from litestar_bento_db.resilience.codes import ErrorCategory

__all__ = ["POLICIES", "CategoryPolicy", "policy_of", "retryable_categories"]

UNAVAILABLE_DETAIL: Final = "The database is unavailable; nothing was changed. Retry later."
AMBIGUOUS_DETAIL: Final = (
    "The database connection was lost while committing: the outcome is unknown. "
    "Check before retrying a request that is not idempotent."
)


@dataclass(frozen=True)
class CategoryPolicy:
    """How errors of one category are handled."""

    retried: Literal["always", "if_idempotent", "if_timeouts", "never"]
    """``always``; ``if_idempotent``: only for operations marked idempotent;
    ``if_timeouts``: only when retrying timeouts is asked for; ``never``."""
    status: int
    """The HTTP status of a request that raised it (a constraint violation a client
    caused is answered 409 instead of 500, whatever its category)."""
    detail: str | None
    """The answer's detail for a 503 (others use the status's own)."""
    replaces_connection: Literal["yes", "unanswered", "no"]
    """Whether the connection is invalidated (closed, replaced at the next checkout) even
    where SQLAlchemy saw no disconnect: ``unanswered``, only when the database reported
    no code (the client stopped waiting: the connection's state is unknown; a limit the
    server enforced leaves it usable)."""


POLICIES: Final[dict[ErrorCategory, CategoryPolicy]] = {
    ErrorCategory.TRANSIENT: CategoryPolicy("always", 503, UNAVAILABLE_DETAIL, "no"),
    ErrorCategory.CONNECTION: CategoryPolicy("always", 503, UNAVAILABLE_DETAIL, "yes"),
    ErrorCategory.AMBIGUOUS: CategoryPolicy("if_idempotent", 503, AMBIGUOUS_DETAIL, "yes"),
    # on the primary's engine the failover watch replaces the pool (resilience.failover)
    ErrorCategory.READ_ONLY: CategoryPolicy("always", 503, UNAVAILABLE_DETAIL, "no"),
    ErrorCategory.TIMEOUT: CategoryPolicy("if_timeouts", 503, UNAVAILABLE_DETAIL, "unanswered"),
    ErrorCategory.PERMANENT: CategoryPolicy("never", 500, None, "no"),
    ErrorCategory.UNKNOWN: CategoryPolicy("never", 500, None, "no"),
}


def policy_of(category: ErrorCategory) -> CategoryPolicy:
    """The row of :data:`POLICIES` for ``category``."""
    return POLICIES[category]


def retryable_categories(
    *, idempotent: bool = False, retry_timeouts: bool = False
) -> frozenset[ErrorCategory]:
    """The categories worth another attempt.

    Args:
        idempotent: The operation may safely run twice (AMBIGUOUS is retried too).
        retry_timeouts: Statements cancelled by the time limit are retried too.
    """
    allowed = {"always"}
    if idempotent:
        allowed.add("if_idempotent")
    if retry_timeouts:
        allowed.add("if_timeouts")
    return frozenset(c for c, policy in POLICIES.items() if policy.retried in allowed)
