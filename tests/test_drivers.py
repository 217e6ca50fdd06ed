"""The driver registry and the category policy: one place each, no silent wrong branch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import make_url

from litestar_bento_db.drivers import (
    DRIVERS,
    UnknownDriverError,
    driver_named,
    driver_of_connection,
    driver_of_error,
)
from litestar_bento_db.resilience import POLICIES, ErrorCategory
from litestar_bento_db.resilience.policy import retryable_categories


def test_every_supported_database_has_its_default_driver_registered() -> None:
    from litestar_bento_db.urls import BACKENDS

    for database_type, default in BACKENDS.values():
        driver = driver_named(default)
        assert driver is not None
        assert driver.database_type == database_type
    assert set(DRIVERS) == {"asyncpg", "psycopg", "asyncmy", "aiosqlite"}


def test_a_connection_of_no_registered_driver_is_refused_by_name() -> None:
    class Foreign:
        driver_connection = object()

    with pytest.raises(UnknownDriverError, match=r"builtins\.object connections"):
        driver_of_connection(Foreign())


def test_errors_are_found_by_their_drivers_module() -> None:
    import sqlite3

    import asyncmy.errors
    import asyncpg
    import psycopg

    assert driver_of_error(asyncpg.PostgresError()) is DRIVERS["asyncpg"]
    assert driver_of_error(psycopg.OperationalError()) is DRIVERS["psycopg"]
    assert driver_of_error(asyncmy.errors.OperationalError(2013, "lost")) is DRIVERS["asyncmy"]
    assert driver_of_error(sqlite3.OperationalError()) is DRIVERS["aiosqlite"]
    assert driver_of_error(ValueError()) is None


def test_a_refused_psycopg_connection_reports_what_the_server_said() -> None:
    import psycopg

    driver = DRIVERS["psycopg"]
    refused = psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        'FATAL:  database "nosuch" does not exist'
    )
    report = driver.report(refused)
    assert report is not None
    assert report.code == "3D000"
    gone = driver.report(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert gone is not None
    assert gone.code == "08006"


def test_psycopg_stays_optional_at_import() -> None:
    """Importing the package loads no psycopg: a user without the extra is not affected."""
    code = "import sys, litestar_bento_db; print('psycopg' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_every_category_has_a_policy_and_retries_follow_it() -> None:
    assert set(POLICIES) == set(ErrorCategory)
    assert retryable_categories() == {
        ErrorCategory.TRANSIENT,
        ErrorCategory.CONNECTION,
        ErrorCategory.READ_ONLY,  # nothing was written; the primary may be back
    }
    assert ErrorCategory.AMBIGUOUS in retryable_categories(idempotent=True)
    assert ErrorCategory.TIMEOUT in retryable_categories(retry_timeouts=True)
    assert {c for c, p in POLICIES.items() if p.status == 503} == {
        ErrorCategory.TRANSIENT,
        ErrorCategory.CONNECTION,
        ErrorCategory.AMBIGUOUS,
        ErrorCategory.TIMEOUT,
        ErrorCategory.READ_ONLY,
    }


async def test_a_subclass_of_a_drivers_connection_is_that_drivers() -> None:
    """asyncpg's ``connection_class`` (an app's own subclass) keeps its adapter."""
    import asyncpg

    from tests.conftest import require_server

    class AppConnection(asyncpg.Connection):  # type: ignore[misc]
        pass

    url = make_url(require_server("postgresql")).set(drivername="postgresql")
    connection = await asyncpg.connect(
        url.render_as_string(hide_password=False), connection_class=AppConnection
    )
    try:
        assert driver_of_connection(connection) is DRIVERS["asyncpg"]
    finally:
        await connection.close()
