"""Resilience: classify database errors and retry whole units of work."""

from __future__ import annotations

from litestar_bento_db.resilience.classification import (
    DatabaseErrorClassifier,
    is_database_error,
    is_database_error_retryable,
)
from litestar_bento_db.resilience.codes import ErrorCategory
from litestar_bento_db.resilience.constraints import ConstraintViolation, constraint_violation
from litestar_bento_db.resilience.policy import POLICIES, CategoryPolicy
from litestar_bento_db.resilience.retry import (
    DEFAULT_RETRY_BUDGET,
    Attempt,
    OnRetry,
    RetryableOperation,
    RetryBudget,
    RetryConfig,
    retry_on_db_error,
    retryable,
)

__all__ = [
    "DEFAULT_RETRY_BUDGET",
    "POLICIES",
    "Attempt",
    "CategoryPolicy",
    "ConstraintViolation",
    "DatabaseErrorClassifier",
    "ErrorCategory",
    "OnRetry",
    "RetryBudget",
    "RetryConfig",
    "RetryableOperation",
    "constraint_violation",
    "is_database_error",
    "is_database_error_retryable",
    "retry_on_db_error",
    "retryable",
]
