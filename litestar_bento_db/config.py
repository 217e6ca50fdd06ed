"""Database configuration: ``DatabaseConfig`` with ``DB_*`` environment fallback.

Every field not given to the constructor is read from its ``DB_*`` environment
variable (``DB_URL``, ``DB_POOL_SIZE``, ...), else takes its default. Explicit
arguments win. Bad input raises :class:`ConfigError` at construction, naming the
field or variable; no message ever contains the password.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

__all__ = ["ConfigError", "DatabaseConfig", "DatabaseType", "get_database_config", "mask_url"]

DatabaseType = Literal["postgresql", "mysql", "sqlite"]

T = TypeVar("T")

ENV_PREFIX: Final = "DB_"

# backend name in the URL -> (database type, the async driver we use)
_BACKENDS: Final[dict[str, tuple[DatabaseType, str]]] = {
    "postgresql": ("postgresql", "asyncpg"),
    "postgres": ("postgresql", "asyncpg"),
    "mysql": ("mysql", "asyncmy"),
    "mariadb": ("mysql", "asyncmy"),
    "sqlite": ("sqlite", "aiosqlite"),
}

# drivers SQLAlchemy knows but this package refuses (sync, or async but unsupported)
_REFUSED_DRIVERS: Final = frozenset(
    {
        "psycopg2",
        "psycopg2cffi",
        "psycopg",
        "psycopg_async",
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


class ConfigError(ValueError):
    """Invalid database configuration; the message names the field or variable."""


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


def normalize_url(url: str, *, source: str = "url") -> str:
    """Complete a URL with its async driver and refuse unsupported drivers.

    Args:
        url: The database URL as given.
        source: The field or variable name used in error messages.

    Returns:
        The URL with an explicit async driver (``postgresql+asyncpg``, ...).

    Raises:
        ConfigError: The URL is malformed, its dialect unknown or its driver not async.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"{source}: expected a database URL such as 'postgresql://host/db'")
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError):
        # SQLAlchemy's own message repeats the whole URL (password included)
        raise ConfigError(
            f"{source}: malformed database URL; expected 'dialect[+driver]://user:password"
            "@host[:port]/database' (for example 'postgresql+asyncpg://app@db:5432/app')"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in _BACKENDS:
        known = ", ".join(sorted(_BACKENDS))
        raise ConfigError(f"{source}: unsupported database {backend!r}; expected one of {known}")
    db_type, async_driver = _BACKENDS[backend]
    if driver and driver != async_driver:
        if driver in _REFUSED_DRIVERS:
            why = "is not an async driver" if not driver.startswith("aio") else "is not supported"
        else:
            why = "is unknown"
        raise ConfigError(
            f"{source}: driver {driver!r} {why}; use '{db_type}+{async_driver}://...' "
            f"(or '{backend}://...', which selects {async_driver})"
        )
    if db_type == "sqlite" and parsed.host:
        raise ConfigError(
            f"{source}: a SQLite URL takes no host; use 'sqlite+aiosqlite:///relative.db', "
            "'sqlite+aiosqlite:////absolute.db' or 'sqlite+aiosqlite:///:memory:'"
        )
    if db_type != "sqlite" and not parsed.host:
        raise ConfigError(
            f"{source}: a {db_type} URL needs a host, e.g. '{backend}://user@host/db'"
        )
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ConfigError(f"{source}: port must be between 1 and 65535")
    # rewrite only the scheme: re-rendering would re-quote the rest (':memory:', options)
    _, _, rest = url.strip().partition("://")
    return f"{db_type}+{async_driver}://{rest}"


# -- value parsers: each takes the raw value and the name to report -------------


def _parse_int(minimum: int) -> Callable[[object, str], int]:
    def parse(value: object, name: str) -> int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r}")
        try:
            number = int(value) if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{name}: expected an integer >= {minimum}, got {number}")
        return number

    return parse


def _parse_float(minimum: float, *, inclusive: bool) -> Callable[[object, str], float]:
    bound = f">= {minimum}" if inclusive else f"> {minimum}"

    def parse(value: object, name: str) -> float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number {bound}, got {value!r}")
        try:
            number = float(value) if isinstance(value, int | float) else float(str(value).strip())
        except ValueError:
            raise ConfigError(f"{name}: expected a number {bound}, got {value!r}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ConfigError(f"{name}: expected a finite number {bound}, got {value!r}")
        if number < minimum or (not inclusive and number == minimum):
            raise ConfigError(f"{name}: expected a number {bound}, got {number:g}")
        return number

    return parse


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _parse_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true/false (or 1/0, yes/no, on/off), got {value!r}")


def _parse_name(value: object, name: str) -> str:
    text = str(value).strip() if isinstance(value, str) else None
    if not text or len(text) > 63 or not text.isprintable():
        raise ConfigError(f"{name}: expected a printable name of 1 to 63 characters")
    return text


def _parse_url(value: object, name: str) -> str:
    return normalize_url(value if isinstance(value, str) else "", source=name)


def _env_name(field_name: str) -> str:
    return f"{ENV_PREFIX}{field_name.upper()}"


def _from_env(field_name: str, parse: Callable[[object, str], T], default: T) -> Callable[[], T]:
    """A ``default_factory`` that reads ``DB_<FIELD>``, else returns the default."""
    variable = _env_name(field_name)

    def factory() -> T:
        raw = os.environ.get(variable)
        if raw is None or raw.strip() == "":
            if field_name == "url" and os.environ.get("DATABASE_URL", "").strip():
                return parse(os.environ["DATABASE_URL"], "DATABASE_URL")
            return default
        return parse(raw, variable)

    return factory


_PARSERS: Final[dict[str, Callable[[object, str], object]]] = {
    "url": _parse_url,
    "pool_size": _parse_int(0),
    "max_overflow": _parse_int(-1),
    "overflow_idle_timeout": _parse_float(0.0, inclusive=True),
    "pool_timeout": _parse_float(0.0, inclusive=False),
    "pool_recycle": _parse_int(-1),
    "pool_pre_ping": _parse_bool,
    "connect_timeout": _parse_float(0.0, inclusive=False),
    "command_timeout": _parse_float(0.0, inclusive=True),
    "echo": _parse_bool,
    "application_name": _parse_name,
    "pgbouncer": _parse_bool,
    "warmup_connections": _parse_int(0),
}


def _env(name: str, default: T) -> Callable[[], T]:
    parse = _PARSERS[name]
    return _from_env(name, parse, default)  # type: ignore[arg-type]


@dataclass(frozen=True, repr=False)
class DatabaseConfig:
    """Connection and pool settings for one database.

    Each field not passed explicitly is read from ``DB_<FIELD>`` (``DB_URL`` falls
    back to ``DATABASE_URL``), else takes the default shown. Values are validated at
    construction; a bad one raises :class:`ConfigError`.
    """

    url: str = field(default_factory=_env("url", "sqlite+aiosqlite:///app.db"))
    """Database URL. A URL without a driver gets the async one (asyncpg, asyncmy, aiosqlite)."""
    pool_size: int = field(default_factory=_env("pool_size", 5))
    """Connections the pool keeps open (PostgreSQL, MySQL)."""
    max_overflow: int = field(default_factory=_env("max_overflow", 10))
    """Extra connections allowed above ``pool_size`` under load; -1 for no limit."""
    overflow_idle_timeout: float = field(default_factory=_env("overflow_idle_timeout", 30.0))
    """Seconds the overflow connections stay open after demand last exceeded ``pool_size``;
    0 closes each one as soon as it is returned (SQLAlchemy's behaviour). Saves opening
    and closing connections continuously under a load just above ``pool_size``."""
    pool_timeout: float = field(default_factory=_env("pool_timeout", 30.0))
    """Seconds to wait for a free connection before ``sqlalchemy.exc.TimeoutError``."""
    pool_recycle: int = field(default_factory=_env("pool_recycle", 3600))
    """Seconds after which a connection is replaced; -1 never. MySQL keeps the session's
    ``wait_timeout`` above it, so the server never drops a pooled connection first."""
    pool_pre_ping: bool = field(default_factory=_env("pool_pre_ping", True))
    """Test each pooled connection before handing it out (safe across event loops here)."""
    connect_timeout: float = field(default_factory=_env("connect_timeout", 10.0))
    """Seconds to establish a connection; also SQLite's ``busy_timeout``."""
    command_timeout: float = field(default_factory=_env("command_timeout", 60.0))
    """Seconds a statement may run before the database cancels it; 0 disables."""
    echo: bool = field(default_factory=_env("echo", False))
    """Log every SQL statement (development only)."""
    application_name: str = field(default_factory=_env("application_name", "litestar-bento-db"))
    """Name the server shows for these connections (``pg_stat_activity``, MySQL attrs)."""
    pgbouncer: bool = field(default_factory=_env("pgbouncer", False))
    """PostgreSQL behind PgBouncer in transaction pooling: no prepared-statement cache."""
    warmup_connections: int = field(default_factory=_env("warmup_connections", 1))
    """Connections opened and pinged at startup before the app reports ready."""

    def __post_init__(self) -> None:
        for name, parse in _PARSERS.items():
            object.__setattr__(self, name, parse(getattr(self, name), name))

    def __repr__(self) -> str:
        return (
            f"DatabaseConfig(url={self.safe_url!r}, pool_size={self.pool_size}, "
            f"max_overflow={self.max_overflow}, "
            f"overflow_idle_timeout={self.overflow_idle_timeout}, "
            f"pool_timeout={self.pool_timeout}, "
            f"pool_recycle={self.pool_recycle}, pool_pre_ping={self.pool_pre_ping}, "
            f"connect_timeout={self.connect_timeout}, command_timeout={self.command_timeout}, "
            f"echo={self.echo}, application_name={self.application_name!r}, "
            f"pgbouncer={self.pgbouncer}, warmup_connections={self.warmup_connections})"
        )

    __str__ = __repr__

    @property
    def safe_url(self) -> str:
        """The URL with the password masked, for logs and output."""
        return mask_url(self.url)

    @property
    def sqlalchemy_url(self) -> URL:
        """The URL as a SQLAlchemy ``URL`` object."""
        return make_url(self.url)

    @property
    def database_type(self) -> DatabaseType:
        """``"postgresql"``, ``"mysql"`` (MySQL and MariaDB) or ``"sqlite"``."""
        return _BACKENDS[self.sqlalchemy_url.get_backend_name()][0]

    @property
    def driver(self) -> str:
        """The async driver: ``"asyncpg"``, ``"asyncmy"`` or ``"aiosqlite"``."""
        return self.sqlalchemy_url.get_driver_name()

    @property
    def is_postgres(self) -> bool:
        """True for PostgreSQL."""
        return self.database_type == "postgresql"

    @property
    def is_mysql(self) -> bool:
        """True for MySQL and MariaDB."""
        return self.database_type == "mysql"

    @property
    def is_sqlite(self) -> bool:
        """True for SQLite."""
        return self.database_type == "sqlite"

    @property
    def is_memory_sqlite(self) -> bool:
        """True for an in-memory SQLite database (``:memory:`` or no file name)."""
        if not self.is_sqlite:
            return False
        database = self.sqlalchemy_url.database or ""
        return database in ("", ":memory:") or "mode=memory" in self.url


def get_database_config(**overrides: object) -> DatabaseConfig:
    """Build a :class:`DatabaseConfig` from ``DB_*`` variables, with explicit overrides.

    Args:
        **overrides: Field values that take precedence over the environment.

    Returns:
        The validated configuration.
    """
    unknown = set(overrides) - set(_PARSERS)
    if unknown:
        raise ConfigError(f"unknown DatabaseConfig field(s): {', '.join(sorted(unknown))}")
    return DatabaseConfig(**overrides)  # type: ignore[arg-type]
