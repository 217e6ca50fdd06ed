"""Database URLs: the supported databases, driver completion, and password masking."""

from __future__ import annotations

import importlib.util
from typing import Any, Final, Literal

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from litestar_bento_db._values import ConfigError
from litestar_bento_db.drivers import DRIVERS, driver_named

__all__ = ["DatabaseType", "database_type_of", "mask_url", "normalize_url"]

DatabaseType = Literal["postgresql", "mysql", "sqlite"]

#: The one table of supported databases: SQLAlchemy backend (dialect) name ->
#: (database type, the driver a URL without one gets). The drivers themselves are
#: :data:`litestar_bento_db.drivers.DRIVERS`.
BACKENDS: Final[dict[str, tuple[DatabaseType, str]]] = {
    "postgresql": ("postgresql", "asyncpg"),
    "postgres": ("postgresql", "asyncpg"),
    "mysql": ("mysql", "asyncmy"),
    "mariadb": ("mysql", "asyncmy"),
    "sqlite": ("sqlite", "aiosqlite"),
}

#: SQLAlchemy's other names for a supported driver
_ALIASES: Final = {"psycopg_async": "psycopg"}
# drivers SQLAlchemy knows but this package refuses (sync, or async but unsupported)
_REFUSED_DRIVERS: Final = frozenset(
    {
        "psycopg2",
        "psycopg2cffi",
        "pg8000",
        "pygresql",
        "pymysql",
        "mysqldb",
        "mysqlconnector",
        "mariadbconnector",
        "aiomysql",
        "cymysql",
        "pyodbc",
        "pysqlite",
        "pysqlcipher",
    }
)


def database_type_of(backend: str) -> DatabaseType | None:
    """The database type of a SQLAlchemy backend or dialect name (``"mariadb"`` -> mysql)."""
    entry = BACKENDS.get(backend)
    return entry[0] if entry else None


def mask_url(url: str | URL) -> str:
    """Render a database URL with its password replaced by ``***``.

    Args:
        url: A URL string or SQLAlchemy ``URL``.

    Returns:
        The URL as text, safe to log. A string that does not parse is not echoed.
    """
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except (ArgumentError, ValueError):
        return "<unparseable database URL>"
    if parsed.password is None and isinstance(url, str):
        return url  # nothing to hide; rendering would re-quote ':memory:' and options
    return parsed.render_as_string(hide_password=True)


def normalize_url(url: Any, field_name: str = "url") -> str:
    """Complete a URL with its async driver and refuse unsupported drivers.

    Args:
        url: The database URL as given.
        field_name: The field or variable named in error messages.

    Returns:
        The URL with an explicit async driver (``postgresql+asyncpg``, ...).

    Raises:
        ConfigError: The URL is malformed, its database unknown or its driver not async.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{field_name}: expected a database URL such as 'postgresql://host/db'")
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError):
        # SQLAlchemy's own message repeats the whole URL (password included)
        raise ConfigError(
            f"{field_name}: malformed database URL; expected 'dialect[+driver]://user:password"
            "@host[:port]/database' (for example 'postgresql+asyncpg://app@db:5432/app')"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigError(
            f"{field_name}: unsupported database {backend!r}; expected one of {known}"
        )
    db_type, default_driver = BACKENDS[backend]
    driver = _ALIASES.get(driver, driver) or default_driver
    adapter = driver_named(driver)
    if adapter is None or adapter.database_type != db_type:
        if driver in _REFUSED_DRIVERS:
            why = "is not an async driver" if not driver.startswith("aio") else "is not supported"
        else:
            why = "is unknown"
        supported = " or ".join(
            f"'{db_type}+{name}://...'" for name, d in DRIVERS.items() if d.database_type == db_type
        )
        raise ConfigError(
            f"{field_name}: driver {driver!r} {why}; use {supported} "
            f"(or '{backend}://...', which selects {default_driver})"
        )
    if adapter.extra and importlib.util.find_spec(adapter.module) is None:
        raise ConfigError(
            f"{field_name}: driver {driver!r} is not installed; "
            f"pip install 'litestar-bento-db[{adapter.extra}]'"
        )
    if db_type == "sqlite" and parsed.host:
        raise ConfigError(
            f"{field_name}: a SQLite URL takes no host; use 'sqlite+aiosqlite:///relative.db', "
            "'sqlite+aiosqlite:////absolute.db' or 'sqlite+aiosqlite:///:memory:'"
        )
    if db_type != "sqlite" and not parsed.host:
        raise ConfigError(
            f"{field_name}: a {db_type} URL needs a host, e.g. '{backend}://user@host/db'"
        )
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ConfigError(f"{field_name}: port must be between 1 and 65535")
    # rewrite only the scheme: re-rendering would re-quote the rest (':memory:', options)
    _, _, rest = url.strip().partition("://")
    return f"{db_type}+{driver}://{rest}"
