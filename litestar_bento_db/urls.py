"""Database URLs: the supported databases, driver completion, and password masking."""

from __future__ import annotations

import importlib.util
import re
from typing import Any, Final, Literal
from urllib.parse import urlencode

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from litestar_bento_db._values import ConfigError
from litestar_bento_db.drivers import DRIVERS, driver_named

__all__ = [
    "DEFAULT_PORTS",
    "URL_LIST_SEPARATOR",
    "DatabaseType",
    "database_type_of",
    "hosts_of",
    "mask_url",
    "normalize_url",
]

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


#: libpq's ``target_session_attrs`` values (asyncpg 0.28+ takes the same)
TARGET_SESSION_ATTRS: Final = (
    "any",
    "read-write",
    "read-only",
    "primary",
    "standby",
    "prefer-standby",
)
#: where a list of URLs in one variable splits: a comma before the next scheme (a comma
#: inside a URL separates the hosts of a multi-host URL)
URL_LIST_SEPARATOR: Final = r",\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)"
#: the port a host without one gets, per database type
DEFAULT_PORTS: Final = {"postgresql": 5432, "mysql": 3306}
# scheme://[user[:password]@]hosts[/path][?query], the user info split as SQLAlchemy
# splits it (a password may hold '/', ',' and '?'): libpq's multi-host form
# (h1:p1,h2:p2) is not one SQLAlchemy parses
_NETLOC: Final = re.compile(
    r"^(?P<scheme>[^:/]+://)(?:(?P<userinfo>[^:/@]*(?::[^@]*)?)@)?(?P<hosts>[^/?]*)(?P<rest>.*)$",
    re.S,
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
        parsed = url if isinstance(url, URL) else make_url(_from_libpq_hosts(url.strip(), "url"))
    except (ArgumentError, ValueError):  # ConfigError too
        return "<unparseable database URL>"
    if parsed.password is None and isinstance(url, str):
        return url  # nothing to hide; rendering would re-quote ':memory:' and options
    masked = parsed.render_as_string(hide_password=True)
    # readable hosts in the query (host=h1:5432, host=/run/postgresql): for people to read
    return masked.replace("%3A", ":").replace("%2C", ",").replace("%2F", "/")


def _host_entries(url: URL) -> tuple[str, ...]:
    """The ``host=`` query values of a URL, one per host (``host=h1,h2`` split too)."""
    value = url.query.get("host")
    if value is None:
        return ()
    values = (value,) if isinstance(value, str) else tuple(value)
    return tuple(entry.strip() for joined in values for entry in joined.split(","))


def _split_port(entry: str, default: int | None) -> tuple[str, int | None]:
    host, colon, port = entry.rpartition(":")
    if not colon:
        return entry, default
    # -1 (refused by the checks): not a port, or a host that still holds a colon
    valid = port.isascii() and port.isdecimal() and ":" not in host
    return host, int(port) if valid else -1


def hosts_of(url: URL) -> tuple[tuple[str, int | None], ...]:
    """The ``(host, port)`` pairs of a URL: its host, or each ``host=`` query key.

    A port that is not given is None (the database's default).
    """
    entries = _host_entries(url)
    if not entries:
        return ((url.host, url.port),) if url.host else ()
    port = url.query.get("port")  # one host with a separate port key
    default = (
        int(port) if len(entries) == 1 and isinstance(port, str) and port.isdecimal() else None
    )
    return tuple(_split_port(entry, default) for entry in entries)


def _from_libpq_hosts(url: str, field_name: str) -> str:
    """Rewrite libpq's multi-host form (``//u@h1:p1,h2:p2/db``) as SQLAlchemy's (``?host=``)."""
    match = _NETLOC.match(url)
    if match is None or "," not in match["hosts"]:
        return url
    hostlist = match["hosts"]
    userinfo, at = (match["userinfo"], "@") if match["userinfo"] is not None else ("", "")
    if "[" in hostlist:
        raise ConfigError(
            f"{field_name}: IPv6 addresses are not supported in a multi-host URL; "
            "use host names or IPv4 addresses"
        )
    hosts = [host.strip() for host in hostlist.split(",")]
    if not all(hosts):
        raise ConfigError(f"{field_name}: an empty host in the list of hosts")
    path, question, query = match["rest"].partition("?")
    pairs = [("host", host) for host in hosts]
    joined = urlencode(pairs, safe=":")
    query = f"{joined}&{query}" if question and query else joined
    return f"{match['scheme']}{userinfo}{at}{path or '/'}?{query}"


def _check_hosts(parsed: URL, db_type: DatabaseType, backend: str, field_name: str) -> URL:
    """Validate the host(s) and ``target_session_attrs``.

    Returns:
        ``parsed``; with several hosts, rewritten as one ``host=h:port`` key per host.
    """
    if db_type == "sqlite":
        if parsed.host:
            raise ConfigError(
                f"{field_name}: a SQLite URL takes no host; use 'sqlite+aiosqlite:///relative.db', "
                "'sqlite+aiosqlite:////absolute.db' or 'sqlite+aiosqlite:///:memory:'"
            )
        return parsed
    entries = _host_entries(parsed)
    if entries or "," in (parsed.host or ""):
        if db_type != "postgresql":
            raise ConfigError(f"{field_name}: only PostgreSQL URLs may name several hosts")
        if "," in (parsed.host or ""):  # not rewritten: the list did not parse as hosts
            raise ConfigError(f"{field_name}: malformed list of hosts; expected 'h1:5432,h2:5432'")
    if entries and parsed.host:
        raise ConfigError(
            f"{field_name}: give the hosts either before the database name or as "
            "'?host=h:port' keys, not both"
        )
    several = len(entries) > 1
    if several and "port" in parsed.query:
        raise ConfigError(
            f"{field_name}: give each host with its port ('h1:5432,h2:5432' or "
            "'?host=h1:5432&host=h2:5432'), not a separate 'port' key"
        )
    hosts = hosts_of(parsed)
    if not hosts or not all(host for host, _ in hosts):
        raise ConfigError(
            f"{field_name}: a {db_type} URL needs a host, e.g. '{backend}://user@host/db'"
        )
    if any(port is not None and not 0 < port < 65536 for _, port in hosts):
        raise ConfigError(f"{field_name}: port must be between 1 and 65535")
    attrs = parsed.query.get("target_session_attrs")
    if attrs is not None:
        if db_type != "postgresql":
            raise ConfigError(f"{field_name}: target_session_attrs is a PostgreSQL setting")
        if attrs not in TARGET_SESSION_ATTRS:
            raise ConfigError(
                f"{field_name}: target_session_attrs must be one of "
                f"{', '.join(TARGET_SESSION_ATTRS)}; got {attrs!r}"
            )
    if not several:
        return parsed
    # every host with its port, one key each: asyncpg's dialect needs them all
    default = DEFAULT_PORTS[db_type]
    pairs = [("host", f"{host}:{port or default}") for host, port in hosts]
    return parsed.update_query_pairs(pairs)


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
    url = _from_libpq_hosts(url.strip(), field_name)
    try:
        parsed = make_url(url)
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
    checked = _check_hosts(parsed, db_type, backend, field_name)
    if checked is not parsed:  # several hosts: each with its port, in one form
        base = checked.set(query={}).render_as_string(hide_password=False)
        pairs = [
            (key, value)
            for key, values in checked.query.items()
            for value in ((values,) if isinstance(values, str) else values)
        ]
        url = f"{base}?{urlencode(pairs, safe=':/,')}"
    # rewrite only the scheme: re-rendering would re-quote the rest (':memory:', options)
    _, _, rest = url.partition("://")
    return f"{db_type}+{driver}://{rest}"
