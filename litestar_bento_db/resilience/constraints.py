"""Constraint violations a client can cause: unique, foreign key, check.

:func:`constraint_violation` tells which kind was violated, from the code tables
(:mod:`~litestar_bento_db.resilience.codes`), and the constraint's name, from the
driver's adapter (a field of the error, or the server's message where the driver has
none); values are never part of the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar_bento_db.drivers import DRIVERS
from litestar_bento_db.resilience.classification import code_entry, error_chain, reported
from litestar_bento_db.resilience.codes import SQLITE_CONSTRAINT_CODES, ConstraintKind

__all__ = ["ConstraintKind", "ConstraintViolation", "constraint_violation"]


@dataclass(frozen=True)
class ConstraintViolation:
    """A violated constraint: its kind and, when the database says, its name."""

    kind: ConstraintKind
    """``"unique"``, ``"foreign_key"`` or ``"check"``."""
    name: str | None
    """The constraint's name (SQLite: the columns or check); never a value."""


def constraint_violation(exc: BaseException) -> ConstraintViolation | None:
    """The unique, foreign-key or check violation behind ``exc``, if that is what it is."""
    report = reported(exc)
    if report is None:
        return None
    if report.database == "sqlite":
        kind = SQLITE_CONSTRAINT_CODES.get(report.extended_code or 0)
    else:
        entry = code_entry(report)
        kind = entry.constraint if entry else None
    if kind is None:
        return None
    name = DRIVERS[report.driver].constraint_name(report, list(error_chain(exc)))
    return ConstraintViolation(kind, name)
