"""Error code tables: which driver-reported conditions are worth a retry.

Keys are what the database reports: PostgreSQL SQLSTATE, MySQL/MariaDB error numbers,
SQLite primary result codes. Each entry names the condition it stands for.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal, NamedTuple

__all__ = [
    "Code",
    "ConstraintKind",
    "MYSQL_ERRNOS",
    "MYSQL_REFINEMENTS",
    "POSTGRES_REFINEMENTS",
    "POSTGRES_SQLSTATE_CLASSES",
    "POSTGRES_SQLSTATES",
    "SQLITE_CODES",
    "SQLITE_CONSTRAINT_CODES",
    "ErrorCategory",
]


class ErrorCategory(StrEnum):
    """What a database error means for the caller."""

    TRANSIENT = "transient"
    """The transaction was rolled back and may succeed if run again (deadlock,
    serialization failure, lock timeout, too many connections, pool exhausted)."""
    CONNECTION = "connection"
    """The connection failed or was lost outside a commit; a new one may work."""
    AMBIGUOUS = "ambiguous"
    """The connection was lost while committing: the commit may or may not have
    happened. Retried only for operations marked idempotent."""
    READ_ONLY = "read_only"
    """The server refused a write because it is read-only (a hot standby, a server in
    read-only mode): nothing was written. On the primary's URL it means the primary
    moved (failover, switchover); a new connection may reach the new one."""
    TIMEOUT = "timeout"
    """The statement ran past its time limit; retried only when asked for."""
    PERMANENT = "permanent"
    """Running it again gives the same error (syntax, constraint, auth, unknown object)."""
    UNKNOWN = "unknown"
    """Not recognised as a database condition; never retried."""


ConstraintKind = Literal["unique", "foreign_key", "check"]


class Code(NamedTuple):
    """One code a database reports: what it means for the caller, and its name."""

    category: ErrorCategory
    """The category of the condition."""
    name: str
    """The database's name for the condition."""
    constraint: ConstraintKind | None = None
    """The kind of constraint a client's input violated (answered 409), if it is one."""
    unavailable: bool = False
    """The server cannot serve now (starting, stopping, full): a replica is skipped."""
    bad_password: bool = False
    """The server refused the password: a rotated one is read again and tried once."""


T, C, A, TO, P, RO = (
    ErrorCategory.TRANSIENT,
    ErrorCategory.CONNECTION,
    ErrorCategory.AMBIGUOUS,
    ErrorCategory.TIMEOUT,
    ErrorCategory.PERMANENT,
    ErrorCategory.READ_ONLY,
)

POSTGRES_SQLSTATES: Final[dict[str, Code]] = {
    "40001": Code(T, "serialization_failure"),
    "40P01": Code(T, "deadlock_detected"),
    "55P03": Code(T, "lock_not_available"),
    "55006": Code(T, "object_in_use"),
    "53000": Code(T, "insufficient_resources"),
    "53200": Code(T, "out_of_memory"),
    "53300": Code(T, "too_many_connections", unavailable=True),
    "57P03": Code(T, "cannot_connect_now (server starting up)", unavailable=True),
    "72000": Code(T, "snapshot_too_old"),
    "08000": Code(C, "connection_exception"),
    "08001": Code(C, "sqlclient_unable_to_establish_sqlconnection"),
    "08003": Code(C, "connection_does_not_exist"),
    "08004": Code(C, "sqlserver_rejected_establishment_of_sqlconnection"),
    "08006": Code(C, "connection_failure"),
    "08P01": Code(C, "protocol_violation"),
    "57P01": Code(C, "admin_shutdown (backend terminated)"),
    "57P02": Code(C, "crash_shutdown"),
    "57P05": Code(C, "idle_session_timeout"),
    "25P03": Code(C, "idle_in_transaction_session_timeout"),
    "08007": Code(A, "transaction_resolution_unknown"),
    "40003": Code(A, "statement_completion_unknown"),
    "57014": Code(TO, "query_canceled (statement_timeout)"),
    "25006": Code(RO, "read_only_sql_transaction (a standby, or read-only mode)"),
    "28000": Code(P, "invalid_authorization_specification"),
    "28P01": Code(P, "invalid_password", bad_password=True),
    "3D000": Code(P, "invalid_catalog_name (unknown database)"),
    "42601": Code(P, "syntax_error"),
    "42P01": Code(P, "undefined_table"),
    "42703": Code(P, "undefined_column"),
    "42883": Code(P, "undefined_function"),
    "42501": Code(P, "insufficient_privilege"),
    "23505": Code(P, "unique_violation", "unique"),
    "23503": Code(P, "foreign_key_violation", "foreign_key"),
    "23502": Code(P, "not_null_violation"),
    "23514": Code(P, "check_violation", "check"),
    "23P01": Code(P, "exclusion_violation"),
    "22001": Code(P, "string_data_right_truncation"),
    "22003": Code(P, "numeric_value_out_of_range"),
    "22P02": Code(P, "invalid_text_representation"),
    "25P02": Code(P, "in_failed_sql_transaction"),
}

#: codes whose meaning depends on who sent them: (SQLSTATE, message prefix) -> category.
#: PgBouncer (before 1.21) reports a failed login as 08P01 "password authentication
#: failed"; by its code alone it would be retried as a connection error.
POSTGRES_REFINEMENTS: Final[dict[tuple[str, str], ErrorCategory]] = {
    ("08P01", "password authentication failed"): P,
    ("08P01", "no such user"): P,
    ("08P01", "no such database"): P,
}

#: MySQL/MariaDB codes whose meaning depends on the message: (error number, text the
#: message contains) -> category. 1290 names the server option that refused the
#: statement: ``--read-only`` and ``--super-read-only`` (also as ``--read-only=ON``)
#: make it a read-only refusal; no other option's name holds "read-only".
MYSQL_REFINEMENTS: Final[dict[tuple[int, str], ErrorCategory]] = {
    (1290, "read-only"): RO,
}

#: fallback by SQLSTATE class (first two characters)
POSTGRES_SQLSTATE_CLASSES: Final[dict[str, ErrorCategory]] = {
    "08": C,  # connection exception
    "22": P,  # data exception
    "23": P,  # integrity constraint violation
    "28": P,  # invalid authorization
    "3D": P,  # invalid catalog name
    "42": P,  # syntax error or access rule violation
    "40": T,  # transaction rollback
}

MYSQL_ERRNOS: Final[dict[int, Code]] = {
    1213: Code(T, "ER_LOCK_DEADLOCK"),
    1205: Code(T, "ER_LOCK_WAIT_TIMEOUT"),
    3572: Code(T, "ER_LOCK_NOWAIT"),
    1020: Code(T, "ER_CHECKREAD (record changed since last read)"),
    1040: Code(T, "ER_CON_COUNT_ERROR (too many connections)"),
    1203: Code(T, "ER_TOO_MANY_USER_CONNECTIONS"),
    1226: Code(T, "ER_USER_LIMIT_REACHED"),
    1412: Code(T, "ER_TABLE_DEF_CHANGED"),
    1614: Code(T, "ER_XA_RBDEADLOCK"),
    1637: Code(T, "ER_TOO_MANY_CONCURRENT_TRXS"),
    2002: Code(C, "CR_CONNECTION_ERROR"),
    2003: Code(C, "CR_CONN_HOST_ERROR"),
    2006: Code(C, "CR_SERVER_GONE_ERROR"),
    2013: Code(C, "CR_SERVER_LOST"),
    2055: Code(C, "CR_SERVER_LOST_EXTENDED"),
    1053: Code(C, "ER_SERVER_SHUTDOWN"),
    1077: Code(C, "ER_NORMAL_SHUTDOWN"),
    1152: Code(C, "ER_ABORTING_CONNECTION"),
    1927: Code(C, "ER_CONNECTION_KILLED (MariaDB)"),
    4031: Code(C, "ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)"),
    1969: Code(TO, "ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)"),
    3024: Code(TO, "ER_QUERY_TIMEOUT (MySQL max_execution_time)"),
    1317: Code(TO, "ER_QUERY_INTERRUPTED"),
    1792: Code(RO, "ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION"),
    1836: Code(RO, "ER_READ_ONLY_MODE"),
    # read_only / super_read_only refine it (MYSQL_REFINEMENTS); --secure-file-priv and
    # the like are permanent
    1290: Code(P, "ER_OPTION_PREVENTS_STATEMENT"),
    1045: Code(P, "ER_ACCESS_DENIED_ERROR", bad_password=True),
    1044: Code(P, "ER_DBACCESS_DENIED_ERROR"),
    1142: Code(P, "ER_TABLEACCESS_DENIED_ERROR"),
    1049: Code(P, "ER_BAD_DB_ERROR (unknown database)"),
    1064: Code(P, "ER_PARSE_ERROR"),
    1146: Code(P, "ER_NO_SUCH_TABLE"),
    1054: Code(P, "ER_BAD_FIELD_ERROR"),
    1062: Code(P, "ER_DUP_ENTRY", "unique"),
    1451: Code(P, "ER_ROW_IS_REFERENCED_2", "foreign_key"),
    1452: Code(P, "ER_NO_REFERENCED_ROW_2", "foreign_key"),
    1048: Code(P, "ER_BAD_NULL_ERROR"),
    1406: Code(P, "ER_DATA_TOO_LONG"),
    1264: Code(P, "ER_WARN_DATA_OUT_OF_RANGE"),
    1366: Code(P, "ER_TRUNCATED_WRONG_VALUE_FOR_FIELD"),
    4025: Code(P, "ER_CONSTRAINT_FAILED (MariaDB CHECK)", "check"),
    3819: Code(P, "ER_CHECK_CONSTRAINT_VIOLATED (MySQL CHECK)", "check"),
}

#: SQLite extended result codes of constraint violations a client can cause
SQLITE_CONSTRAINT_CODES: Final[dict[int, ConstraintKind]] = {
    2067: "unique",  # SQLITE_CONSTRAINT_UNIQUE: UNIQUE constraint failed: <table.column>
    1555: "unique",  # SQLITE_CONSTRAINT_PRIMARYKEY
    787: "foreign_key",  # SQLITE_CONSTRAINT_FOREIGNKEY (no name reported)
    275: "check",  # SQLITE_CONSTRAINT_CHECK: CHECK constraint failed: <name or expression>
}

#: SQLite primary result codes (``sqlite_errorcode & 0xFF``)
SQLITE_CODES: Final[dict[int, Code]] = {
    5: Code(T, "SQLITE_BUSY (database is locked)"),
    6: Code(T, "SQLITE_LOCKED (table is locked)"),
    1: Code(P, "SQLITE_ERROR (syntax error, no such table)"),
    8: Code(P, "SQLITE_READONLY"),
    11: Code(P, "SQLITE_CORRUPT"),
    13: Code(P, "SQLITE_FULL"),
    14: Code(P, "SQLITE_CANTOPEN"),
    19: Code(P, "SQLITE_CONSTRAINT"),
    20: Code(P, "SQLITE_MISMATCH"),
    23: Code(P, "SQLITE_AUTH"),
    26: Code(P, "SQLITE_NOTADB"),
}
