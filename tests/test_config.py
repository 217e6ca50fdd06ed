from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy.engine import make_url

from litestar_bento_db import (
    ConfigError,
    DatabaseConfig,
    DrainingMode,
    HealthConfig,
    PluginConfig,
    get_database_config,
    mask_url,
)
from tests.conftest import SECRET

pytestmark = pytest.mark.usefixtures("clean_env")


def test_defaults_match_the_usage_guide() -> None:
    config = DatabaseConfig()
    assert config.url == "sqlite+aiosqlite:///app.db"
    assert (config.pool_size, config.max_overflow) == (5, 10)
    assert config.overflow_idle_timeout == 30.0
    assert (config.pool_timeout, config.pool_recycle) == (30.0, 3600)
    assert config.pool_pre_ping is True
    assert (config.connect_timeout, config.command_timeout) == (10.0, 60.0)
    assert config.echo is False


def test_environment_fills_fields_and_explicit_arguments_win(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DB_URL", f"postgresql://app:{SECRET}@db.internal:5433/orders")
    clean_env.setenv("DB_POOL_SIZE", "20")
    clean_env.setenv("DB_MAX_OVERFLOW", "-1")
    clean_env.setenv("DB_OVERFLOW_IDLE_TIMEOUT", "0")
    clean_env.setenv("DB_POOL_TIMEOUT", "2.5")
    clean_env.setenv("DB_POOL_RECYCLE", "1800")
    clean_env.setenv("DB_POOL_PRE_PING", "off")
    clean_env.setenv("DB_CONNECT_TIMEOUT", "3")
    clean_env.setenv("DB_COMMAND_TIMEOUT", "0")
    clean_env.setenv("DB_ECHO", "yes")
    clean_env.setenv("DB_APPLICATION_NAME", "orders-api")
    clean_env.setenv("DB_PGBOUNCER", "true")
    clean_env.setenv("DB_WARMUP_CONNECTIONS", "4")
    config = DatabaseConfig(pool_size=7)
    assert config.url == f"postgresql+asyncpg://app:{SECRET}@db.internal:5433/orders"
    assert config.pool_size == 7  # explicit wins
    assert config.max_overflow == -1
    assert config.overflow_idle_timeout == 0.0
    assert config.pool_timeout == 2.5
    assert config.pool_recycle == 1800
    assert config.pool_pre_ping is False
    assert config.connect_timeout == 3.0
    assert config.command_timeout == 0.0
    assert config.echo is True
    assert config.application_name == "orders-api"
    assert config.pgbouncer is True
    assert config.warmup_connections == 4
    assert get_database_config().pool_size == 20
    assert get_database_config(pool_size=1).pool_size == 1


def test_database_url_is_the_fallback_for_db_url(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", "postgres://u@h/d")
    assert DatabaseConfig().url == "postgresql+asyncpg://u@h/d"
    clean_env.setenv("DB_URL", "mysql://u@h/d")
    assert DatabaseConfig().url == "mysql+asyncmy://u@h/d"


@pytest.mark.parametrize(
    ("url", "expected", "database_type"),
    [
        ("postgresql://u@h/d", "postgresql+asyncpg://u@h/d", "postgresql"),
        ("postgres://u@h/d", "postgresql+asyncpg://u@h/d", "postgresql"),
        ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d", "postgresql"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d", "postgresql"),
        ("postgres+psycopg_async://u@h/d", "postgresql+psycopg://u@h/d", "postgresql"),
        ("mysql://u@h/d", "mysql+asyncmy://u@h/d", "mysql"),
        ("mariadb://u@h/d", "mysql+asyncmy://u@h/d", "mysql"),
        ("mariadb+asyncmy://u@h/d", "mysql+asyncmy://u@h/d", "mysql"),
        ("sqlite:///app.db", "sqlite+aiosqlite:///app.db", "sqlite"),
        ("sqlite:///:memory:", "sqlite+aiosqlite:///:memory:", "sqlite"),
    ],
)
def test_driverless_urls_get_the_async_driver(url: str, expected: str, database_type: str) -> None:
    config = DatabaseConfig(url=url)
    assert config.url == expected
    assert config.database_type == database_type
    assert config.is_postgres is (database_type == "postgresql")
    assert config.is_mysql is (database_type == "mysql")
    assert config.is_sqlite is (database_type == "sqlite")
    assert config.driver == expected.split("+")[1].split(":")[0]


BAD_FIELDS = [
    ({"url": f"postgresql://u:{SECRET}@h:99999/d"}, "url", "port"),
    ({"url": f"not a url {SECRET}"}, "url", "malformed"),
    ({"url": f"oracle://u:{SECRET}@h/d"}, "url", "unsupported database 'oracle'"),
    ({"url": f"postgresql+psycopg2://u:{SECRET}@h/d"}, "url", "postgresql+asyncpg"),
    ({"url": f"postgresql+psycopg2://u:{SECRET}@h/d"}, "url", "'postgresql+psycopg://...'"),
    ({"url": f"postgresql+pg8000://u:{SECRET}@h/d"}, "url", "'pg8000' is not an async driver"),
    ({"url": f"postgresql+nosuch://u:{SECRET}@h/d"}, "url", "driver 'nosuch' is unknown"),
    ({"url": f"mysql+psycopg://u:{SECRET}@h/d"}, "url", "use 'mysql+asyncmy://...'"),
    ({"url": f"mysql+pymysql://u:{SECRET}@h/d"}, "url", "mysql+asyncmy"),
    ({"url": f"mysql+aiomysql://u:{SECRET}@h/d"}, "url", "mysql+asyncmy"),
    ({"url": "sqlite+pysqlite:///x.db"}, "url", "sqlite+aiosqlite"),
    ({"url": f"postgresql://u:{SECRET}@/d"}, "url", "needs a host"),
    ({"url": ""}, "url", "expected a database URL"),
    ({"pool_size": -1}, "pool_size", "integer >= 0"),
    ({"pool_size": "abc"}, "pool_size", "integer >= 0, got 'abc'"),
    ({"max_overflow": -2}, "max_overflow", "integer >= -1"),
    ({"overflow_idle_timeout": -1}, "overflow_idle_timeout", "number >= 0"),
    ({"pool_timeout": 0}, "pool_timeout", "number > 0"),
    ({"pool_recycle": 1.5}, "pool_recycle", "integer"),
    ({"connect_timeout": -3}, "connect_timeout", "number > 0"),
    ({"command_timeout": -1}, "command_timeout", "number >= 0"),
    ({"command_timeout": float("nan")}, "command_timeout", "finite"),
    ({"pool_pre_ping": "maybe"}, "pool_pre_ping", "true/false"),
    ({"echo": "2"}, "echo", "true/false"),
    ({"application_name": ""}, "application_name", "1 to 63"),
    ({"pool_size": True}, "pool_size", "integer"),
]


@pytest.mark.parametrize(("kwargs", "field", "fragment"), BAD_FIELDS)
def test_bad_arguments_name_the_field(kwargs: dict[str, object], field: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig(**kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"{field}: ")
    assert fragment in message
    assert SECRET not in message
    assert SECRET not in repr(caught.value.__cause__ or "")


BAD_VARIABLES = [
    ("DB_POOL_SIZE", "abc", "DB_POOL_SIZE: expected an integer >= 0, got 'abc'"),
    ("DB_POOL_SIZE", "-5", "DB_POOL_SIZE: expected an integer >= 0, got -5"),
    ("DB_MAX_OVERFLOW", "ten", "DB_MAX_OVERFLOW: expected an integer >= -1"),
    ("DB_OVERFLOW_IDLE_TIMEOUT", "abc", "DB_OVERFLOW_IDLE_TIMEOUT: expected a number >= 0"),
    ("DB_POOL_TIMEOUT", "soon", "DB_POOL_TIMEOUT: expected a number > 0"),
    ("DB_POOL_RECYCLE", "1h", "DB_POOL_RECYCLE: expected an integer >= -1"),
    ("DB_POOL_PRE_PING", "sometimes", "DB_POOL_PRE_PING: expected true/false"),
    ("DB_CONNECT_TIMEOUT", "-1", "DB_CONNECT_TIMEOUT: expected a number > 0"),
    ("DB_COMMAND_TIMEOUT", "inf", "DB_COMMAND_TIMEOUT: expected a finite number"),
    ("DB_ECHO", "loud", "DB_ECHO: expected true/false"),
    ("DB_URL", f"postgresql+psycopg2://u:{SECRET}@h/d", "DB_URL: driver 'psycopg2'"),
    ("DB_URL", f"://u:{SECRET}@", "DB_URL: malformed database URL"),
    ("DATABASE_URL", f"mssql://u:{SECRET}@h/d", "DATABASE_URL: unsupported database 'mssql'"),
]


@pytest.mark.parametrize(("variable", "value", "expected"), BAD_VARIABLES)
def test_bad_environment_names_the_variable(
    clean_env: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        get_database_config()
    assert str(caught.value).startswith(expected)
    assert SECRET not in str(caught.value)


def test_password_is_masked_in_repr_and_str() -> None:
    config = DatabaseConfig(url=f"postgresql://app:{SECRET}@db/orders")
    for text in (repr(config), str(config), config.safe_url, f"{config}"):
        assert SECRET not in text
        assert "app:***@db" in text
    assert config.url.count(SECRET) == 1  # the real URL is kept for connecting


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown DatabaseConfig field"):
        get_database_config(pool_sise=3)


def test_config_is_immutable() -> None:
    config = DatabaseConfig()
    with pytest.raises(AttributeError):
        config.pool_size = 3  # type: ignore[misc]


def test_repr_lists_every_field() -> None:
    config = DatabaseConfig(url=f"postgresql://app:{SECRET}@db/orders")
    text = repr(config)
    for field in dataclasses.fields(config):
        assert f"{field.name}=" in text


BAD_PLUGIN_OPTIONS = [
    (HealthConfig, {"path": "health"}, "path: expected a path starting with '/'"),
    (HealthConfig, {"readiness_timeout": 0}, "readiness_timeout: expected a number > 0"),
    (HealthConfig, {"cache_ttl": -1}, "cache_ttl: expected a number >= 0"),
    (HealthConfig, {"retry_after": "soon"}, "retry_after: expected an integer >= 0"),
    (PluginConfig, {"drain_timeout": -1}, "drain_timeout: expected a number >= 0"),
    (
        PluginConfig,
        {"startup_retry_max_delay": 0},
        "startup_retry_max_delay: expected a number > 0",
    ),
    (PluginConfig, {"drain_mode": "sideways"}, "drain_mode: expected one of graceful, immediate"),
    (PluginConfig, {"session_dependency_key": ""}, "session_dependency_key: expected a printable"),
    (PluginConfig, {"fail_fast": "perhaps"}, "fail_fast: expected true/false"),
]


@pytest.mark.parametrize(("cls", "kwargs", "expected"), BAD_PLUGIN_OPTIONS)
def test_plugin_options_raise_config_error_naming_the_field(
    cls: type, kwargs: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        cls(**kwargs)
    assert str(caught.value).startswith(expected)


def test_plugin_options_are_converted() -> None:
    config = PluginConfig(drain_mode="force", fail_fast="yes")  # type: ignore[arg-type]
    assert config.drain_mode is DrainingMode.FORCE
    assert config.fail_fast is True


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        # libpq's form, as the managed services and Patroni's docs give it
        ("postgresql://app@db1:5432,db2:5433/orders", "host=db1:5432&host=db2:5433"),
        ("postgres://app@db1,db2/orders", "host=db1:5432&host=db2:5432"),
        # SQLAlchemy's own form; its comma form too
        ("postgresql+asyncpg://app@/orders?host=db1:5432&host=db2", "host=db1:5432&host=db2:5432"),
        ("postgresql+psycopg://app@/orders?host=db1,db2:6000", "host=db1:5432&host=db2:6000"),
    ],
)
def test_multi_host_urls_take_one_form(url: str, hosts: str) -> None:
    config = DatabaseConfig(url=f"{url}{'&' if '?' in url else '?'}target_session_attrs=primary")
    assert config.url.endswith(f"/orders?{hosts}&target_session_attrs=primary")
    assert config.metrics_pool_name == hosts.replace("host=", "").replace("&", ",") + "/orders"


def test_multi_host_urls_mask_the_password_and_keep_their_query() -> None:
    config = DatabaseConfig(
        url=f"postgresql://app:{SECRET}@db1:5432,db2:5433/orders?target_session_attrs=read-write"
    )
    assert config.sqlalchemy_url.password == SECRET
    assert config.safe_url == (
        "postgresql+asyncpg://app:***@/orders?host=db1:5432&host=db2:5433"
        "&target_session_attrs=read-write"
    )
    assert SECRET not in repr(config)


def test_replica_urls_split_between_urls_not_between_hosts(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(
        "DB_READ_REPLICA_URLS",
        "postgresql://app@db1:5432,db2:5432/orders?target_session_attrs=standby,"
        " postgresql://app@db3/orders",
    )
    config = DatabaseConfig(url="postgresql://app@db1/orders")
    assert config.read_replica_urls == (
        "postgresql+asyncpg://app@/orders?host=db1:5432&host=db2:5432&target_session_attrs=standby",
        "postgresql+asyncpg://app@db3/orders",
    )


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://app@db1,db2/orders", "only PostgreSQL URLs may name several hosts"),
        ("postgresql://app@db1,,db2/orders", "an empty host"),
        ("postgresql://app@db1:5432,db2:70000/orders", "port must be between 1 and 65535"),
        ("postgresql://app@db1:x,db2/orders", "port must be between 1 and 65535"),
        ("postgresql://app@[::1]:5432,db2/orders", "IPv6"),
        ("postgresql://app@/orders?host=db1&host=db2&port=5432", "not a separate 'port' key"),
        ("postgresql://app@db0/orders?host=db1&host=db2", "not both"),
        ("postgresql://app@db1/orders?target_session_attrs=master", "one of any, read-write"),
        ("mysql://app@db1/orders?target_session_attrs=read-write", "a PostgreSQL setting"),
    ],
)
def test_bad_multi_host_urls_name_the_problem(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=r"^url: ") as raised:
        DatabaseConfig(url=url)
    assert fragment in str(raised.value)


def test_expect_writable_is_on_by_default_and_off_for_replicas(
    clean_env: pytest.MonkeyPatch,
) -> None:
    from litestar_bento_db.replicas import ReplicaSet

    config = DatabaseConfig(
        url="postgresql://app@db1/orders", read_replica_urls=("postgres://db2/o",)
    )
    assert config.expect_writable is True
    (replica,) = ReplicaSet(config).replicas
    assert replica.settings.config.expect_writable is False  # a standby, by design
    clean_env.setenv("DB_EXPECT_WRITABLE", "false")
    assert DatabaseConfig().expect_writable is False


@pytest.mark.parametrize(
    ("url", "pool_name"),
    [
        # SQLAlchemy reads a password up to the last '@': ',' and '/' stay in it
        (f"postgresql://app:1,{SECRET}/x@db1/orders", "db1:5432/orders"),
        (f"postgresql://app:{SECRET},x/y@db1:5433/orders", "db1:5433/orders"),
        (f"mysql://app:a,{SECRET}/c@db1/orders", "db1:3306/orders"),
        (f"postgresql://app:{SECRET}/x@db1,db2/orders", "db1:5432,db2:5432/orders"),
        ("postgresql://app@/orders?host=db1&port=5433", "db1:5433/orders"),
    ],
)
def test_commas_and_slashes_in_a_password_are_the_passwords(url: str, pool_name: str) -> None:
    config = DatabaseConfig(url=url)
    assert config.metrics_pool_name == pool_name
    password = make_url(url.replace("db1,db2", "db1")).password
    assert config.sqlalchemy_url.password == password
    if password:
        assert password not in config.safe_url
        assert SECRET not in config.metrics_pool_name


@pytest.mark.parametrize("url", ["postgresql://u@h1:5433:6,h2/db", "postgresql://u@h1:²,h2/db"])
def test_odd_ports_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="port must be between 1 and 65535"):
        DatabaseConfig(url=url)


def test_mask_url_reads_the_libpq_multi_host_form() -> None:
    masked = mask_url(f"postgresql://app:{SECRET}@db1:5432,db2:5433/orders")
    assert masked == "postgresql://app:***@/orders?host=db1:5432&host=db2:5433"
