"""One adapter per DBAPI driver, and the registry that finds it.

Adding a driver is one module with a :class:`Driver` subclass and one row in
``DRIVERS``. A driver that is not registered is refused when a URL names it
(:func:`driver_named`), and code that meets a connection or error of no registered
driver says so (:func:`driver_of_connection`) instead of guessing.
"""

from __future__ import annotations

from typing import Any, Final

from litestar_bento_db.drivers.aiosqlite import AiosqliteDriver
from litestar_bento_db.drivers.asyncmy import AsyncmyDriver
from litestar_bento_db.drivers.asyncpg import AsyncpgDriver
from litestar_bento_db.drivers.base import Driver, Reported
from litestar_bento_db.drivers.psycopg import PsycopgDriver

__all__ = [
    "DRIVERS",
    "Driver",
    "Reported",
    "UnknownDriverError",
    "driver_named",
    "driver_of_connection",
    "driver_of_error",
]

#: every supported driver by its URL name; the first of a database is its default
DRIVERS: Final[dict[str, Driver]] = {
    driver.name: driver
    for driver in (AsyncpgDriver(), PsycopgDriver(), AsyncmyDriver(), AiosqliteDriver())
}

_BY_ERROR_MODULE: Final[dict[str, Driver]] = {
    module: driver
    for driver in DRIVERS.values()
    for module in (driver.module, *driver.error_modules)
}
_BY_CONNECTION_TYPE: dict[type, Driver] = {}


class UnknownDriverError(LookupError):
    """A connection of a driver this package has no adapter for."""


def driver_named(name: str) -> Driver | None:
    """The adapter for a URL's driver name, if it is supported."""
    return DRIVERS.get(name)


def driver_of_connection(dbapi_connection: Any) -> Driver:
    """The adapter for SQLAlchemy's adapted connection (its ``driver_connection``).

    Raises:
        UnknownDriverError: No registered driver owns the connection.
    """
    driver_connection = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    kind = type(driver_connection)
    driver = _BY_CONNECTION_TYPE.get(kind)
    if driver is None:
        driver = next((d for d in DRIVERS.values() if d.owns_connection(driver_connection)), None)
        if driver is None:
            raise UnknownDriverError(
                f"no litestar-bento-db adapter for {kind.__module__}.{kind.__qualname__} "
                f"connections; supported drivers: {', '.join(DRIVERS)}"
            )
        _BY_CONNECTION_TYPE[kind] = driver
    return driver


def driver_of_error(error: BaseException) -> Driver | None:
    """The adapter whose driver (or SQLAlchemy's adapter of it) defines ``error``'s class."""
    module = type(error).__module__
    return _BY_ERROR_MODULE.get(module) or _BY_ERROR_MODULE.get(module.partition(".")[0])
