"""Database configuration: ``DatabaseConfig`` with ``DB_*`` environment fallback.

Every field not given to the constructor is read from its ``DB_*`` environment
variable (``DB_URL``, ``DB_POOL_SIZE``, ...), else takes its default. Explicit
arguments win. Bad input raises :class:`ConfigError` at construction, naming the
field or variable; no message ever contains the password.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from sqlalchemy.engine import URL, make_url

from litestar_bento_db._values import (
    ConfigError,
    boolean,
    callable_value,
    choice,
    env_name,
    integer,
    items,
    label,
    name,
    number,
    option,
    optional,
    parse_field,
    readable_file,
    render_fields,
    safe_fields,
    setting,
    validate_fields,
)
from litestar_bento_db.tls import SSL_MODES, SYSTEM_CA, SslMode, TlsSettings, tls_fields_of_url
from litestar_bento_db.urls import (
    BACKENDS,
    DEFAULT_PORTS,
    URL_LIST_SEPARATOR,
    DatabaseType,
    hosts_of,
    mask_url,
    normalize_url,
)

__all__ = ["ConfigError", "DatabaseConfig", "DatabaseType", "get_database_config", "mask_url"]


#: a ``password_provider``: returns the password (or a token) for one new connection
PasswordProvider = Callable[[], str | Awaitable[str]]
#: an ``on_connect`` hook: called with the driver's connection, may be a coroutine function
ConnectHook = Callable[[Any], Awaitable[None] | None]

#: ``create_async_engine`` arguments this configuration sets itself: not in ``engine_options``
_OWN_ENGINE_ARGUMENTS: Final = {
    "echo": "echo",
    "hide_parameters": "hide_parameters",
    "connect_args": "the URL and the settings (connect_timeout, ssl_*, ...)",
    "pool_size": "pool_size",
    "max_overflow": "max_overflow",
    "pool_timeout": "pool_timeout",
    "pool_recycle": "pool_recycle",
    "pool_pre_ping": "pool_pre_ping",
    "poolclass": "pooling",
    "pool": "pooling",
    "pool_use_lifo": "the dialect settings",
    "creator": "the URL",
    "async_creator": "the URL",
    "plugins": "the package's engine plugin",
    "json_serializer": "json_serializer",
    "json_deserializer": "json_deserializer",
}


def _engine_options(value: object, field_name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ConfigError(
            f"{field_name}: expected a mapping of create_async_engine() arguments, "
            f"got {type(value).__name__}"
        )
    owned = [
        f"{key} (set by {_OWN_ENGINE_ARGUMENTS[key]})"
        for key in value
        if key in _OWN_ENGINE_ARGUMENTS
    ]
    if owned:
        raise ConfigError(f"{field_name}: {', '.join(owned)}; not here")
    return MappingProxyType(dict(value))


def _ca_file(value: object, field_name: str) -> str:
    if isinstance(value, str) and value.strip() == SYSTEM_CA:
        return SYSTEM_CA
    return readable_file(value, field_name)


def _mask_urls(urls: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(mask_url(url) for url in urls)


@dataclass(frozen=True, repr=False)
class DatabaseConfig:
    """Connection and pool settings for one database.

    Each field not passed explicitly is read from ``DB_<FIELD>`` (``DB_URL`` falls
    back to ``DATABASE_URL``), else takes the default shown. Values are validated at
    construction; a bad one raises :class:`ConfigError`.
    """

    url: str = setting(
        "sqlite+aiosqlite:///app.db",
        normalize_url,
        fallback_env="DATABASE_URL",
        mask=mask_url,
    )
    """Database URL. A URL without a driver gets the async one (asyncpg, asyncmy, aiosqlite)."""
    pool_size: int = setting(5, integer(0))
    """Connections the pool keeps open (PostgreSQL, MySQL)."""
    max_overflow: int = setting(10, integer(-1))
    """Extra connections allowed above ``pool_size`` under load; -1 for no limit."""
    overflow_idle_timeout: float = setting(30.0, number(0))
    """Seconds the overflow connections stay open after demand last exceeded ``pool_size``;
    0 closes each one as soon as it is returned (SQLAlchemy's behaviour). Saves opening
    and closing connections continuously under a load just above ``pool_size``."""
    pool_timeout: float = setting(30.0, number(0, inclusive=False))
    """Seconds to wait for a free connection before ``sqlalchemy.exc.TimeoutError``. When
    every connection is in use and the expected wait (the checkouts ahead, times the mean
    time a connection is held, over ``pool_size + max_overflow``) exceeds it, the checkout
    is refused at once instead (a 503 in the plugin): under overload, admitted requests
    wait about this long at most, the others are answered in milliseconds."""
    max_pending: int = setting(-1, integer(-1))
    """Checkouts that may wait for a connection at once (every connection in use); more
    are refused at once. -1: no limit but the expected wait (see ``pool_timeout``)."""
    pool_recycle: int = setting(3600, integer(-1))
    """Seconds after which a connection is replaced; -1 never. MySQL keeps the session's
    ``wait_timeout`` above it, so the server never drops a pooled connection first."""
    pool_pre_ping: bool = setting(True, boolean)
    """Test each pooled connection before handing it out (safe across event loops here)."""
    connect_timeout: float = setting(10.0, number(0, inclusive=False))
    """Seconds to establish a connection; also SQLite's ``busy_timeout``."""
    command_timeout: float = setting(60.0, number(0))
    """Seconds a statement may run before the database cancels it; 0 disables."""
    echo: bool = setting(False, boolean)
    """Log every SQL statement (development only)."""
    hide_parameters: bool = setting(True, boolean)
    """Keep statement parameters (row values: personal data) out of SQLAlchemy's error
    messages and logs; turn off only in development."""
    application_name: str = setting("litestar-bento-db", name)
    """Name the server shows for these connections (``pg_stat_activity``, MySQL attrs)."""
    pgbouncer: bool = setting(False, boolean)
    """PostgreSQL behind PgBouncer in transaction pooling: no prepared-statement cache."""
    warmup_connections: int = setting(1, integer(0))
    """Connections opened and pinged at startup before the app reports ready."""
    pre_ping_idle: float = setting(1.0, number(0))
    """With ``pool_pre_ping``: ping only connections idle longer than this many seconds
    (a connection used more recently is checked without a round trip, and its first
    statement is run again on a fresh connection if it turns out dead); 0 pings every
    checkout."""
    expect_writable: bool = setting(True, boolean)
    """``url`` should reach a writable server (the primary). A write refused because the
    server is read-only (a standby after a failover) then replaces every pooled
    connection and is answered 503, and readiness fails while the server is read-only.
    Turn off for an app that only reads from a standby."""
    read_replica_urls: tuple[str, ...] = setting(
        (), items(normalize_url, URL_LIST_SEPARATOR), mask=_mask_urls
    )
    """Hot-standby replicas that serve reads (PostgreSQL); comma-separated in the variable
    (a comma inside a multi-host URL separates its hosts)."""
    max_replica_lag: float = setting(10.0, number(0, inclusive=False))
    """Seconds a replica may lag behind the primary and still serve reads."""
    replica_check_interval: float = setting(1.0, number(0, inclusive=False))
    """Seconds between two checks of each replica's health and lag."""
    metrics: bool = setting(True, boolean)
    """Collect pool and statement metrics (OpenTelemetry, Prometheus)."""
    pool_name: str | None = setting(None, optional(label))
    """``db.client.connection.pool.name``; default ``host:port/database`` (no user, no
    password)."""
    leak_detection_threshold: float = setting(0.0, number(0))
    """Seconds a connection may stay checked out before a WARNING names who took it;
    0 turns leak detection off (and costs nothing)."""
    slow_statement_threshold: float = setting(0.0, number(0))
    """Seconds after which a statement is logged at WARNING with its SQL (never its
    parameters); 0 turns it off."""
    ssl_mode: SslMode | None = setting(None, optional(choice(SSL_MODES)))
    """TLS, in libpq's terms for every driver: ``disable``, ``prefer``, ``require``,
    ``verify-ca`` (the server's certificate must chain to ``ssl_root_cert``),
    ``verify-full`` (and name the host connected to). Unset: the URL's (PostgreSQL
    ``sslmode``; MySQL ``ssl_ca`` means ``verify-full``), else ``verify-full`` when a CA
    is given, ``require`` when only a client certificate is, else the driver's default
    (asyncpg and psycopg: ``prefer``; asyncmy: no TLS). Replicas use the same."""
    ssl_root_cert: str | None = setting(None, optional(_ca_file))
    """The CA file (PEM) the server's certificate must chain to; ``system`` for the
    system's trusted CAs (a managed service with a public certificate)."""
    ssl_cert: str | None = setting(None, optional(readable_file))
    """A client certificate file (PEM), for servers that authenticate by certificate."""
    ssl_key: str | None = setting(None, optional(readable_file))
    """The client certificate's private key file (PEM), unless ``ssl_cert`` holds it."""
    password_file: str | None = setting(None, optional(readable_file))
    """A file holding the password, read again for each new connection (a Docker or
    Kubernetes secret, a Vault agent's file): a rotated password is used without a
    restart. The URL must then hold no password. A trailing newline is ignored."""
    password_provider: PasswordProvider | None = option(None, optional(callable_value))
    """A function (or coroutine function) returning the password for each new connection,
    e.g. an RDS IAM token. The URL must then hold no password. No environment variable."""
    pooling: bool = setting(True, boolean)
    """Keep connections in a pool; false: a new connection for every checkout, closed on
    return (``NullPool``: behind an external pooler, or for short-lived jobs). Without a
    pool, ``pool_*`` settings do not apply and draining counts no connections."""
    json_serializer: Callable[[Any], str] | None = option(None, optional(callable_value))
    """Turns a value into JSON text for JSON columns (e.g. ``msgspec.json.encode`` and a
    decode); SQLAlchemy's default is ``json.dumps``. No environment variable."""
    json_deserializer: Callable[[str], Any] | None = option(None, optional(callable_value))
    """Reads JSON text of JSON columns; SQLAlchemy's default is ``json.loads``."""
    on_connect: ConnectHook | None = option(None, optional(callable_value))
    """Called with the driver's own connection (``asyncpg.Connection``,
    ``psycopg.AsyncConnection``, asyncmy's or aiosqlite's) for every new connection, after
    the package's session settings; a coroutine function is awaited (e.g. asyncpg's
    ``set_type_codec``). An error fails that connect. No environment variable."""
    engine_options: Mapping[str, Any] | None = option(None, optional(_engine_options))
    """Further ``create_async_engine()`` arguments for what this configuration does not
    set itself (``echo_pool``, ``execution_options``, ``query_cache_size``, ...);
    arguments it sets (``pool_size``, ``connect_args``, ...) are refused here."""

    def __post_init__(self) -> None:
        validate_fields(self)
        kinds = {BACKENDS[make_url(url).get_backend_name()][0] for url in self.read_replica_urls}
        if kinds - {self.database_type}:
            raise ConfigError(
                f"read_replica_urls: replicas must be {self.database_type} databases like url"
            )
        self._resolve_tls()
        self._check_password()

    def _resolve_tls(self) -> None:
        """Take the URL's TLS keys into the fields; complete and check the mode."""
        for field_name, (key, value) in tls_fields_of_url(self.url, self.database_type).items():
            given = getattr(self, field_name)
            value = parse_field(self, field_name, value, f"url ({key})")
            if given is not None and given != value:
                raise ConfigError(
                    f"{field_name} ({env_name(field_name)}) is {given!r} but the url's {key} "
                    f"asks for {value!r}; give it once"
                )
            object.__setattr__(self, field_name, value)
        mode, files = self.ssl_mode, (self.ssl_root_cert, self.ssl_cert, self.ssl_key)
        if mode is None and any(files):
            mode = "verify-full" if self.ssl_root_cert else "require"
            object.__setattr__(self, "ssl_mode", mode)
        if mode is None:
            return
        if self.is_sqlite:
            raise ConfigError("ssl_mode: SQLite has no TLS; leave DB_SSL_* unset")
        if mode == "disable" and any(files):
            raise ConfigError(
                "ssl_mode is 'disable' but a certificate is given (ssl_root_cert, ssl_cert, "
                "ssl_key); remove them or choose another mode"
            )
        if mode.startswith("verify-") and self.ssl_root_cert is None:
            raise ConfigError(
                f"ssl_mode {mode!r} needs ssl_root_cert (DB_SSL_ROOT_CERT): the CA file, "
                f"or '{SYSTEM_CA}' for the system's trusted CAs"
            )
        if self.ssl_key and not self.ssl_cert:
            raise ConfigError("ssl_key (DB_SSL_KEY) is given without ssl_cert (DB_SSL_CERT)")
        tls = self.tls
        if tls is not None and tls.encrypts:
            tls.ssl_context()  # the files are certificates and keys (ConfigError if not)

    def _check_password(self) -> None:
        sources = [name for name in ("password_file", "password_provider") if getattr(self, name)]
        if not sources:
            return
        if self.is_sqlite:
            raise ConfigError(f"{sources[0]}: SQLite takes no password")
        if len(sources) > 1:
            raise ConfigError("password_file and password_provider are both set; give one")
        urls = (self.url, *self.read_replica_urls)
        if any(make_url(url).password is not None for url in urls):
            raise ConfigError(
                f"{sources[0]} is set and a URL holds a password too; give the password once"
            )

    @property
    def tls(self) -> TlsSettings | None:
        """The TLS to use; None: the driver's default (no TLS setting anywhere)."""
        if self.ssl_mode is None:
            return None
        return TlsSettings(self.ssl_mode, self.ssl_root_cert, self.ssl_cert, self.ssl_key)

    def __repr__(self) -> str:
        return render_fields(self)

    __str__ = __repr__

    def safe_dict(self) -> dict[str, object]:
        """Every field, passwords masked (``url``, ``read_replica_urls``): for output."""
        return safe_fields(self)

    @property
    def safe_url(self) -> str:
        """The URL with the password masked, for logs and output."""
        return mask_url(self.url)

    @property
    def metrics_pool_name(self) -> str:
        """``pool_name``, else ``host:port/database``: never the user or password.

        Several hosts: ``h1:p1,h2:p2/database``.
        """
        if self.pool_name:
            return self.pool_name
        url = self.sqlalchemy_url
        if self.is_sqlite:
            return url.database or ":memory:"
        default = DEFAULT_PORTS[self.database_type]
        hosts = ",".join(f"{host}:{port or default}" for host, port in hosts_of(url))
        return f"{hosts}/{url.database or ''}"

    @property
    def sqlalchemy_url(self) -> URL:
        """The URL as a SQLAlchemy ``URL`` object."""
        return make_url(self.url)

    @property
    def database_type(self) -> DatabaseType:
        """``"postgresql"``, ``"mysql"`` (MySQL and MariaDB) or ``"sqlite"``."""
        return BACKENDS[self.sqlalchemy_url.get_backend_name()][0]

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
    known = {field.name for field in dataclasses.fields(DatabaseConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown DatabaseConfig field(s): {', '.join(sorted(unknown))}")
    return DatabaseConfig(**overrides)  # type: ignore[arg-type]
