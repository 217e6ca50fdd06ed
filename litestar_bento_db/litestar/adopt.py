"""An app's own advanced-alchemy config read into the plugin's settings.

``DatabasePlugin(alchemy_config)`` takes the ``SQLAlchemyAsyncConfig`` an app already
has: its URL and engine settings become the :class:`~litestar_bento_db.DatabaseConfig`
(the ``DB_*`` environment gives the rest), its session settings, dependency keys,
Alembic settings, ``create_all`` and ``before_send_handler`` choice the plugin's. What
the plugin sets itself (``connect_args``, the pool class, session binding, ...) is not
used, and one warning at construction says which.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

from advanced_alchemy.config.asyncio import SQLAlchemyAsyncConfig as CoreAsyncConfig
from advanced_alchemy.config.sync import SQLAlchemySyncConfig
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from advanced_alchemy.utils.dataclass import Empty
from sqlalchemy.pool import NullPool

from litestar_bento_db._values import ConfigError, default_of, env_name
from litestar_bento_db.config import DatabaseConfig
from litestar_bento_db.litestar.alchemy import BentoAlchemyConfig
from litestar_bento_db.litestar.config import SESSION_OPTIONS, PluginConfig

__all__ = ["Adopted", "adopt"]

logger = logging.getLogger("litestar_bento_db.litestar")

#: ``engine_config`` fields that are :class:`DatabaseConfig` settings of the same name
_ENGINE_SETTINGS: Final = (
    "pool_size",
    "max_overflow",
    "pool_timeout",
    "pool_recycle",
    "pool_pre_ping",
    "hide_parameters",
    "json_serializer",
    "json_deserializer",
)
#: ``engine_config`` fields the plugin sets otherwise: not used
_ENGINE_OWNED: Final = ("connect_args", "pool", "pool_use_lifo", "plugins")
#: the config's methods the plugin's replace (litestar/alchemy.py)
_TAKEN_OVER_METHODS: Final = ("get_engine", "provide_session", "create_session_maker", "lifespan")
#: plugin options the app's config says instead
_SAID_BY_THE_CONFIG: Final = {
    "alembic_config": "alembic_config",
    "session_options": "session_config",
    "session_dependency_key": "session_dependency_key",
    "engine_dependency_key": "engine_dependency_key",
    "commit_on_redirect": "before_send_handler ('autocommit_include_redirects')",
}
_AA_HANDLERS: Final = "advanced_alchemy.extensions.litestar"


@dataclasses.dataclass(frozen=True)
class Adopted:
    """What :func:`adopt` read from an app's config (which it leaves unchanged)."""

    alchemy: SQLAlchemyAsyncConfig
    """The app's config."""
    config: PluginConfig
    """The plugin's settings."""
    commit_statuses: Collection[int]
    """The statuses whose responses commit (empty: the app commits itself)."""
    unused: tuple[str, ...]
    """The config's settings the plugin does not use as given (warned about)."""


def adopt(alchemy: object, options: Mapping[str, Any]) -> Adopted:
    """Read ``alchemy`` (an app's ``SQLAlchemyAsyncConfig``) and ``options`` into settings.

    Raises:
        ConfigError: ``alchemy`` is not advanced-alchemy's Litestar async config, has
            already made its engine or been given to a plugin, or says something an
            option says too.
    """
    config = _checked(alchemy)
    said_twice = sorted(set(options) & set(_SAID_BY_THE_CONFIG))
    if said_twice:
        where = ", ".join(f"{name} (its {_SAID_BY_THE_CONFIG[name]})" for name in said_twice)
        raise ConfigError(f"DatabasePlugin(alchemy_config, ...): set {where} on the config")
    unused = [
        f"{type(config).__name__}.{name}() (the plugin's is used)"
        for name in _TAKEN_OVER_METHODS
        if getattr(type(config), name) is not getattr(SQLAlchemyAsyncConfig, name)
    ]
    database = _database(config, options.get("database"), unused)
    session_options = _session_options(config, unused)
    metadata = options.get("metadata")
    if config.create_all:
        if metadata is not None:
            raise ConfigError("metadata: the config's create_all says which tables to create")
        metadata = config.metadata  # created by the runtime once the database answers
    plugin_options = {**options, "database": database, "metadata": metadata}
    settings = PluginConfig(
        alembic_config=config.alembic_config,
        session_options=session_options,
        session_dependency_key=config.session_dependency_key,
        engine_dependency_key=config.engine_dependency_key,
        **plugin_options,
    )
    statuses = _commit_statuses(config.before_send_handler)
    adopted = Adopted(config, settings, statuses, tuple(unused))
    if adopted.unused:
        logger.warning(
            "litestar-bento-db: the app's %s sets %s: not used as given (the plugin sets "
            "these itself)",
            type(config).__name__,
            ", ".join(adopted.unused),
        )
    return adopted


def _checked(alchemy: object) -> SQLAlchemyAsyncConfig:
    expected = "advanced_alchemy.extensions.litestar.SQLAlchemyAsyncConfig"
    if isinstance(alchemy, SQLAlchemySyncConfig):
        raise ConfigError(f"DatabasePlugin: a sync config; give an {expected} (async driver)")
    if isinstance(alchemy, CoreAsyncConfig) and not isinstance(alchemy, SQLAlchemyAsyncConfig):
        raise ConfigError(f"DatabasePlugin: advanced-alchemy's core config; give an {expected}")
    if not isinstance(alchemy, SQLAlchemyAsyncConfig):
        raise ConfigError(f"DatabasePlugin: expected a PluginConfig, DatabaseConfig or {expected}")
    if isinstance(alchemy, BentoAlchemyConfig):
        raise ConfigError(
            "DatabasePlugin(alchemy_config): this config was given to a DatabasePlugin "
            "already; one plugin per config"
        )
    if alchemy.engine_instance is not None or alchemy.session_maker is not None:
        raise ConfigError(
            "DatabasePlugin(alchemy_config): the config already has an engine or session "
            "maker (engine_instance, or get_engine()/a session used before); give it a "
            "connection_string and pass it to the plugin before using it"
        )
    if alchemy.routing_config is not None:
        raise ConfigError(
            "DatabasePlugin(alchemy_config): routing_config is not supported; give the "
            "replicas as read_replica_urls (DB_READ_REPLICA_URLS)"
        )
    return alchemy


def _database(
    config: SQLAlchemyAsyncConfig, database: DatabaseConfig | None, unused: list[str]
) -> DatabaseConfig:
    """The database settings: the config's engine settings, and ``database``'s others.

    A setting both give differently (``database``'s not its default) is a ConfigError;
    one the config leaves at advanced-alchemy's default (its JSON functions) yields to
    ``database``'s.
    """
    engine = config.engine_config
    unset = type(engine)()
    settings: dict[str, Any] = {}
    passed: dict[str, Any] = {}
    for engine_field in dataclasses.fields(engine):
        name, value = engine_field.name, getattr(engine, engine_field.name)
        if value is Empty:
            continue
        if name == "echo" and not isinstance(value, bool):
            unused.append(f"engine_config.echo={value!r} (echo=True)")
            value = True
        if name in _ENGINE_SETTINGS or name == "echo":
            if database is None or _yields(name, value, getattr(unset, name, Empty), database):
                settings[name] = value
        elif name == "poolclass":
            if value is NullPool:
                settings["pooling"] = _given_once("pooling", False, database)
            elif value is not None:
                unused.append("engine_config.poolclass")
        elif name in _ENGINE_OWNED:
            unused.append(f"engine_config.{name}")
        else:
            passed[name] = value
    if passed:
        options = dict((database and database.engine_options) or {})
        twice = sorted(key for key in passed if key in options and options[key] != passed[key])
        if twice:
            raise ConfigError(f"engine_options: {', '.join(twice)} given by the config too")
        settings["engine_options"] = {**options, **passed}
    if config.connection_string is not None:
        settings["url"] = _given_once("url", config.connection_string, database)
    if database is not None:
        return dataclasses.replace(database, **settings)
    return DatabaseConfig(**settings)


def _yields(name: str, value: Any, unset: Any, database: DatabaseConfig) -> bool:
    """Whether the config's ``value`` is used rather than ``database``'s."""
    if value is unset:  # advanced-alchemy's default, not the app's choice
        return getattr(database, name) is default_of(DatabaseConfig, name)
    _given_once(name, value, database)
    return True


def _given_once(name: str, value: Any, database: DatabaseConfig | None) -> Any:
    if database is not None:
        given, default = getattr(database, name), default_of(DatabaseConfig, name)
        if given != default and given != value:
            raise ConfigError(
                f"{name}: the config says {value!r} and database ({env_name(name)}) "
                f"{given!r}; set it once"
            )
    return value


def _session_options(config: SQLAlchemyAsyncConfig, unused: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for session_field in dataclasses.fields(config.session_config):
        name, value = session_field.name, getattr(config.session_config, session_field.name)
        if value is Empty:
            continue
        if name in SESSION_OPTIONS:
            options[name] = value
        else:
            unused.append(f"session_config.{name}")
    return options


def _commit_statuses(handler: Callable[..., Any] | str | None) -> Collection[int]:
    """The statuses that commit with advanced-alchemy's own before-send handler."""
    name = getattr(handler, "__qualname__", "")
    module = getattr(handler, "__module__", "")
    if module.startswith(_AA_HANDLERS) and name == "default_handler_maker.<locals>.handler":
        return frozenset()  # the app commits itself
    if module.startswith(_AA_HANDLERS) and name == "autocommit_handler_maker.<locals>.handler":
        made_with = inspect.getclosurevars(handler).nonlocals  # type: ignore[arg-type]
        statuses = set(made_with["commit_range"]) | set(made_with["extra_commit_statuses"])
        return frozenset(statuses - set(made_with["extra_rollback_statuses"]))
    raise ConfigError(
        "before_send_handler: the plugin commits before the response status itself (and "
        "answers a failed commit with 503 or 409); a handler of the app's own is not "
        "run. Give None (the app commits), 'autocommit' or 'autocommit_include_redirects'"
    )
