"""Everything this package adds to an engine, installed in one place, in one order.

:func:`install` runs for every engine built from
:class:`~litestar_bento_db.engines.DialectSettings` (the primary, replicas, their checks,
the CLI's), and for an engine a user builds with
``create_async_engine(url, **settings.get_engine_kwargs())``: those arguments carry the
SQLAlchemy engine plugin :class:`EnginePlugin`, whose ``engine_created`` hook calls it.

In this order:

1. ``do_connect`` (dialect event), where a password is read from a file or provider or
   TLS is asked for: the :class:`~litestar_bento_db.connector.Connector` opens each new
   connection (a fresh password, TLS failures marked, one more try after a password
   rotation); then ``connect`` (pool event): the dialect settings' ``on_connect``
   (session settings, pragmas) on each new connection, then the user's ``on_connect``
   hook with the driver's connection (awaited when it is a coroutine function).
2. ``handle_error`` (dialect event): errors marked, failed COMMITs counted, the
   connection replaced where the category's policy says so
   (:func:`~litestar_bento_db.resilience.classification.on_handle_error`); then, on an
   engine expected to reach the primary (``expect_writable``, not SQLite), a write
   refused as read-only replaces the pool
   (:class:`~litestar_bento_db.resilience.failover.PrimaryWatch`).
3. Liveness (where the settings check it): ``checkout``/``checkin`` pool events that
   check connections without I/O and ping idle ones
   (:func:`~litestar_bento_db.liveness.watch_checkouts`).
4. Pool metrics and leak detection (pool events, as the config asks).
5. ``do_execute``, ``do_execute_no_params``, ``do_executemany`` (dialect events): one
   listener each, running the statement through its layers, outermost first: timing
   and slow-statement logging, then the first-statement replay, then the driver's
   client-side time limit where it has none of its own (:meth:`Driver.guard`: psycopg),
   then the dialect's own method.
6. ``do_commit``, which has no event: the dialect's method wrapped once, outermost first:
   timing, then marking an error raised in flight (so a lost COMMIT is AMBIGUOUS), then
   the driver's time limit. ``do_rollback`` (the pool's reset on return too) gets the
   driver's time limit alone.

With nothing to add to a call (metrics and liveness off) no listener is installed for it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Engine, event
from sqlalchemy.dialects import plugins
from sqlalchemy.engine import URL, CreateEnginePlugin
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_only

from litestar_bento_db.connector import Connector
from litestar_bento_db.liveness import replaying, watch_checkouts
from litestar_bento_db.metrics.instrument import (
    Layer,
    commit_timer,
    instrument_engine,
    statement_timer,
)
from litestar_bento_db.resilience.classification import mark_commit_error, on_handle_error
from litestar_bento_db.resilience.failover import PrimaryWatch
from litestar_bento_db.tls import without_tls_keys

if TYPE_CHECKING:
    from litestar_bento_db.engines.base import DialectSettings

__all__ = ["PLUGIN_NAME", "SETTINGS_KWARG", "EnginePlugin", "install"]

#: the name under which :class:`EnginePlugin` is registered with SQLAlchemy
PLUGIN_NAME: Final = "litestar_bento_db"
#: the ``create_engine`` keyword that hands the plugin its ``DialectSettings``
SETTINGS_KWARG: Final = "bento_settings"
#: seconds a liveness ping may take at most (less when ``connect_timeout`` is shorter)
PING_TIMEOUT: Final = 5.0
_EXECUTE_CALLS: Final = ("do_execute", "do_execute_no_params", "do_executemany")


def _handled(call: Callable[..., Any]) -> Callable[..., bool]:
    """A ``do_execute*`` listener that runs the call itself (True: SQLAlchemy does not)."""

    def listener(cursor: Any, statement: str, *args: Any) -> bool:
        call(cursor, statement, *args)
        return True

    return listener


def _layered(call: Callable[..., Any], layers: list[Layer]) -> Callable[..., Any]:
    """``call`` inside ``layers`` (the first in the list is the outermost)."""
    for layer in reversed(layers):
        call = layer(call)
    return call


def _marking_commit(do_commit: Callable[..., Any]) -> Callable[..., Any]:
    def do_commit_marking_errors(dbapi_connection: Any) -> None:
        try:
            do_commit(dbapi_connection)
        except BaseException as error:
            mark_commit_error(error)
            raise

    return do_commit_marking_errors


def install(engine: Engine, settings: DialectSettings) -> None:
    """Add this package's behaviour to ``engine``, in the order the module describes.

    Args:
        engine: A new engine (the sync one behind an ``AsyncEngine``).
        settings: The dialect settings it was built from.
    """
    config = settings.config
    connector = Connector(settings)
    if connector.needed:
        event.listen(engine, "do_connect", connector.do_connect)

    hook = config.on_connect

    def connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        try:
            settings.on_connect(dbapi_connection)
            if hook is not None:
                result = hook(dbapi_connection.driver_connection)
                if inspect.isawaitable(result):
                    await_only(result)  # the connect event runs inside SQLAlchemy's greenlet
        except BaseException:
            # the connection never reaches the pool: close it (SQLAlchemy 2.0 leaves it
            # open), then let the connect fail
            with contextlib.suppress(Exception):
                dbapi_connection.close()
            raise

    event.listen(engine, "connect", connect)
    event.listen(engine, "handle_error", on_handle_error)
    if config.expect_writable and not config.is_sqlite:
        event.listen(engine, "handle_error", PrimaryWatch(config.metrics_pool_name).on_handle_error)
    execute_layers: list[Layer] = []
    if settings.checks_liveness:
        pre_ping_idle = config.pre_ping_idle if config.pool_pre_ping else None
        watch_checkouts(engine, pre_ping_idle, min(config.connect_timeout, PING_TIMEOUT))
    metrics = instrument_engine(engine, config)
    timer = statement_timer(metrics, config.slow_statement_threshold)
    if timer is not None:
        execute_layers.append(timer)
    if settings.checks_liveness:
        execute_layers.append(replaying(engine))
    dialect = engine.dialect
    driver = settings.driver
    for name in _EXECUTE_CALLS:
        guarded = driver.guard(getattr(dialect, name), config, commit=False)
        if guarded is None and not execute_layers:
            continue  # nothing to add: SQLAlchemy calls the dialect's method itself
        call = guarded or getattr(dialect, name)
        event.listen(engine, name, _handled(_layered(call, execute_layers)))
    do_commit = driver.guard(dialect.do_commit, config, commit=True) or dialect.do_commit
    commit_layers = [layer for layer in (commit_timer(metrics),) if layer is not None]
    commit_layers.append(_marking_commit)
    dialect.do_commit = _layered(do_commit, commit_layers)  # type: ignore[method-assign]
    do_rollback = driver.guard(dialect.do_rollback, config, commit=True)
    if do_rollback is not None:
        dialect.do_rollback = do_rollback  # type: ignore[method-assign]


class EnginePlugin(CreateEnginePlugin):
    """SQLAlchemy's engine-plugin hook: :func:`install` on every engine built from them.

    :meth:`DialectSettings.get_engine_kwargs` names it (``plugins=["litestar_bento_db"]``).
    It also turns SQLAlchemy's own ``pool_pre_ping`` off where the settings check
    liveness themselves (the kwargs report ``pool_pre_ping`` as configured), and takes
    the TLS keys (``sslmode``, ``ssl_ca``, ...) out of the URL: the settings' connect
    arguments carry them in each driver's terms.
    """

    def __init__(self, url: URL, kwargs: dict[str, Any]) -> None:
        settings = kwargs.pop(SETTINGS_KWARG, None)
        if settings is None:
            raise TypeError(
                f"the {PLUGIN_NAME!r} engine plugin needs {SETTINGS_KWARG}=<DialectSettings>: "
                "pass **settings.get_engine_kwargs() to create_async_engine()"
            )
        self.settings: DialectSettings = settings
        super().__init__(url, kwargs)

    def update_url(self, url: URL) -> URL:
        """The URL without its TLS keys: the settings hand them to the driver its way."""
        return without_tls_keys(url)

    def handle_pool_kwargs(self, pool_cls: type, pool_args: dict[str, Any]) -> None:
        """SQLAlchemy's pre-ping gives way to the liveness checks."""
        if self.settings.checks_liveness:
            pool_args["pre_ping"] = False

    def engine_created(self, engine: Engine) -> None:
        """Install everything on the new engine."""
        install(engine, self.settings)


plugins.register(PLUGIN_NAME, __name__, "EnginePlugin")
