"""Error code tables: which driver-reported conditions are worth a retry.

Keys are what the database reports: PostgreSQL SQLSTATE, MySQL/MariaDB error numbers,
SQLite primary result codes. Each entry names the condition it stands for.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "MYSQL_ERRNOS",
    "POSTGRES_REFINEMENTS",
    "POSTGRES_SQLSTATE_CLASSES",
    "POSTGRES_SQLSTATES",
    "SQLITE_CODES",
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
    TIMEOUT = "timeout"
    """The statement ran past its time limit; retried only when asked for."""
    PERMANENT = "permanent"
    """Running it again gives the same error (syntax, constraint, auth, unknown object)."""
    UNKNOWN = "unknown"
    """Not recognised as a database condition; never retried."""


T, C, A, TO, P = (
    ErrorCategory.TRANSIENT,
    ErrorCategory.CONNECTION,
    ErrorCategory.AMBIGUOUS,
    ErrorCategory.TIMEOUT,
    ErrorCategory.PERMANENT,
)

POSTGRES_SQLSTATES: Final[dict[str, tuple[ErrorCategory, str]]] = {
    "40001": (T, "serialization_failure"),
    "40P01": (T, "deadlock_detected"),
    "55P03": (T, "lock_not_available"),
    "55006": (T, "object_in_use"),
    "53000": (T, "insufficient_resources"),
    "53200": (T, "out_of_memory"),
    "53300": (T, "too_many_connections"),
    "57P03": (T, "cannot_connect_now (server starting up)"),
    "72000": (T, "snapshot_too_old"),
    "08000": (C, "connection_exception"),
    "08001": (C, "sqlclient_unable_to_establish_sqlconnection"),
    "08003": (C, "connection_does_not_exist"),
    "08004": (C, "sqlserver_rejected_establishment_of_sqlconnection"),
    "08006": (C, "connection_failure"),
    "08P01": (C, "protocol_violation"),
    "57P01": (C, "admin_shutdown (backend terminated)"),
    "57P02": (C, "crash_shutdown"),
    "57P05": (C, "idle_session_timeout"),
    "25P03": (C, "idle_in_transaction_session_timeout"),
    "08007": (A, "transaction_resolution_unknown"),
    "40003": (A, "statement_completion_unknown"),
    "57014": (TO, "query_canceled (statement_timeout)"),
    "28000": (P, "invalid_authorization_specification"),
    "28P01": (P, "invalid_password"),
    "3D000": (P, "invalid_catalog_name (unknown database)"),
    "42601": (P, "syntax_error"),
    "42P01": (P, "undefined_table"),
    "42703": (P, "undefined_column"),
    "42883": (P, "undefined_function"),
    "42501": (P, "insufficient_privilege"),
    "23505": (P, "unique_violation"),
    "23503": (P, "foreign_key_violation"),
    "23502": (P, "not_null_violation"),
    "23514": (P, "check_violation"),
    "23P01": (P, "exclusion_violation"),
    "22001": (P, "string_data_right_truncation"),
    "22003": (P, "numeric_value_out_of_range"),
    "22P02": (P, "invalid_text_representation"),
    "25P02": (P, "in_failed_sql_transaction"),
}

#: codes whose meaning depends on who sent them: (SQLSTATE, message prefix) -> category.
#: PgBouncer (before 1.21) reports a failed login as 08P01 "password authentication
#: failed"; by its code alone it would be retried as a connection error.
POSTGRES_REFINEMENTS: Final[dict[tuple[str, str], ErrorCategory]] = {
    ("08P01", "password authentication failed"): P,
    ("08P01", "no such user"): P,
    ("08P01", "no such database"): P,
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

MYSQL_ERRNOS: Final[dict[int, tuple[ErrorCategory, str]]] = {
    1213: (T, "ER_LOCK_DEADLOCK"),
    1205: (T, "ER_LOCK_WAIT_TIMEOUT"),
    3572: (T, "ER_LOCK_NOWAIT"),
    1020: (T, "ER_CHECKREAD (record changed since last read)"),
    1040: (T, "ER_CON_COUNT_ERROR (too many connections)"),
    1203: (T, "ER_TOO_MANY_USER_CONNECTIONS"),
    1226: (T, "ER_USER_LIMIT_REACHED"),
    1412: (T, "ER_TABLE_DEF_CHANGED"),
    1614: (T, "ER_XA_RBDEADLOCK"),
    1637: (T, "ER_TOO_MANY_CONCURRENT_TRXS"),
    2002: (C, "CR_CONNECTION_ERROR"),
    2003: (C, "CR_CONN_HOST_ERROR"),
    2006: (C, "CR_SERVER_GONE_ERROR"),
    2013: (C, "CR_SERVER_LOST"),
    2055: (C, "CR_SERVER_LOST_EXTENDED"),
    1053: (C, "ER_SERVER_SHUTDOWN"),
    1077: (C, "ER_NORMAL_SHUTDOWN"),
    1152: (C, "ER_ABORTING_CONNECTION"),
    1927: (C, "ER_CONNECTION_KILLED (MariaDB)"),
    4031: (C, "ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)"),
    1969: (TO, "ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)"),
    3024: (TO, "ER_QUERY_TIMEOUT (MySQL max_execution_time)"),
    1317: (TO, "ER_QUERY_INTERRUPTED"),
    1045: (P, "ER_ACCESS_DENIED_ERROR"),
    1044: (P, "ER_DBACCESS_DENIED_ERROR"),
    1142: (P, "ER_TABLEACCESS_DENIED_ERROR"),
    1049: (P, "ER_BAD_DB_ERROR (unknown database)"),
    1064: (P, "ER_PARSE_ERROR"),
    1146: (P, "ER_NO_SUCH_TABLE"),
    1054: (P, "ER_BAD_FIELD_ERROR"),
    1062: (P, "ER_DUP_ENTRY"),
    1451: (P, "ER_ROW_IS_REFERENCED_2"),
    1452: (P, "ER_NO_REFERENCED_ROW_2"),
    1048: (P, "ER_BAD_NULL_ERROR"),
    1406: (P, "ER_DATA_TOO_LONG"),
    1264: (P, "ER_WARN_DATA_OUT_OF_RANGE"),
    1366: (P, "ER_TRUNCATED_WRONG_VALUE_FOR_FIELD"),
    4025: (P, "ER_CONSTRAINT_FAILED (MariaDB CHECK)"),
    3819: (P, "ER_CHECK_CONSTRAINT_VIOLATED (MySQL CHECK)"),
}

#: SQLite primary result codes (``sqlite_errorcode & 0xFF``)
SQLITE_CODES: Final[dict[int, tuple[ErrorCategory, str]]] = {
    5: (T, "SQLITE_BUSY (database is locked)"),
    6: (T, "SQLITE_LOCKED (table is locked)"),
    1: (P, "SQLITE_ERROR (syntax error, no such table)"),
    8: (P, "SQLITE_READONLY"),
    11: (P, "SQLITE_CORRUPT"),
    13: (P, "SQLITE_FULL"),
    14: (P, "SQLITE_CANTOPEN"),
    19: (P, "SQLITE_CONSTRAINT"),
    20: (P, "SQLITE_MISMATCH"),
    23: (P, "SQLITE_AUTH"),
    26: (P, "SQLITE_NOTADB"),
}
