"""Constraint violations a client can cause: unique, foreign key, check.

:func:`constraint_violation` tells which kind was violated and the constraint's name,
from the driver's code (asyncpg's SQLSTATE and ``constraint_name``, MySQL/MariaDB error
numbers, SQLite's extended result codes). The name comes from the server's message
where the driver has no field for it; values are never part of the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from litestar_bento_db.resilience.classification import error_chain, reported

__all__ = ["ConstraintKind", "ConstraintViolation", "constraint_violation"]

ConstraintKind = Literal["unique", "foreign_key", "check"]

_POSTGRES: Final[dict[str, ConstraintKind]] = {
    "23505": "unique",
    "23503": "foreign_key",
    "23514": "check",
}
_MYSQL: Final[dict[int, ConstraintKind]] = {
    1062: "unique",  # ER_DUP_ENTRY: Duplicate entry '<value>' for key '<name>'
    1451: "foreign_key",  # ER_ROW_IS_REFERENCED_2: ... CONSTRAINT `<name>` FOREIGN KEY ...
    1452: "foreign_key",  # ER_NO_REFERENCED_ROW_2
    4025: "check",  # MariaDB ER_CONSTRAINT_FAILED: CONSTRAINT `<name>` failed for ...
    3819: "check",  # MySQL ER_CHECK_CONSTRAINT_VIOLATED: Check constraint '<name>' is violated.
}
_SQLITE: Final[dict[int, ConstraintKind]] = {
    2067: "unique",  # SQLITE_CONSTRAINT_UNIQUE: UNIQUE constraint failed: <table.column>
    1555: "unique",  # SQLITE_CONSTRAINT_PRIMARYKEY
    787: "foreign_key",  # SQLITE_CONSTRAINT_FOREIGNKEY (no name reported)
    275: "check",  # SQLITE_CONSTRAINT_CHECK: CHECK constraint failed: <name or expression>
}
# where the server names the constraint in its message; the value part of a MySQL
# duplicate-key message comes first, so the last match is the server's own
_MYSQL_NAME: Final = re.compile(r"for key '([^']+)'|CONSTRAINT `([^`]+)`|constraint '([^']+)'")
_SQLITE_NAME: Final = re.compile(r"constraint failed: (.+)$")


@dataclass(frozen=True)
class ConstraintViolation:
    """A violated constraint: its kind and, when the database says, its name."""

    kind: ConstraintKind
    """``"unique"``, ``"foreign_key"`` or ``"check"``."""
    name: str | None
    """The constraint's name (SQLite: the columns or check); never a value."""


def _last_group(pattern: re.Pattern[str], message: str) -> str | None:
    matches = list(pattern.finditer(message))
    if not matches:
        return None
    return next((group for group in matches[-1].groups() if group), None)


def constraint_violation(exc: BaseException) -> ConstraintViolation | None:
    """The unique, foreign-key or check violation behind ``exc``, if that is what it is."""
    report = reported(exc)
    if report is None:
        return None
    if report.driver == "asyncpg":
        kind = _POSTGRES.get(str(report.code))
        if kind is None:
            return None
        # asyncpg's own exception has it; SQLAlchemy's adapter error wraps that one
        names = (getattr(error, "constraint_name", None) for error in error_chain(exc))
        return ConstraintViolation(kind, next((n for n in names if isinstance(n, str)), None))
    if report.driver == "asyncmy":
        mysql_kind = _MYSQL.get(int(report.code))
        if mysql_kind is None:
            return None
        return ConstraintViolation(mysql_kind, _last_group(_MYSQL_NAME, report.message))
    sqlite_kind = _SQLITE.get(report.extended_code or 0)
    if sqlite_kind is None:
        return None
    name = _last_group(_SQLITE_NAME, report.message) if sqlite_kind != "foreign_key" else None
    return ConstraintViolation(sqlite_kind, name)
