"""An app's request sessions bound to a test's connection and transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker

from litestar_bento_db.litestar.plugin import DatabasePlugin

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = ["bound_to_connection"]

#: the session maker options the binding changes
_KEYS = ("bind", "join_transaction_mode")


def _plugin_of(app: Litestar) -> DatabasePlugin:
    for plugin in app.plugins:
        if isinstance(plugin, DatabasePlugin):
            return plugin
    raise LookupError("db_client: the app fixture's app has no DatabasePlugin")


@contextmanager
def bound_to_connection(app: Litestar, connection: AsyncConnection) -> Iterator[None]:
    """Make the app's sessions run on ``connection``, each inside a SAVEPOINT.

    For a started app: the session makers of its :class:`DatabasePlugin` (requests'
    ``db_session`` and ``db_session_factory`` units of work, primary-only ones included)
    are configured with ``bind=connection`` and ``join_transaction_mode=
    "create_savepoint"``: a session's commit releases its savepoint, its rollback (a
    409, a 503) rolls back to it, and nothing leaves the connection's own transaction.
    The makers get their settings back on exit.

    Args:
        app: The app, after its startup (its makers are created at startup).
        connection: The connection, inside the test's transaction.
    """
    config = _plugin_of(app).alchemy_config
    makers = [
        maker
        for maker in (config.session_maker, config.primary_maker)
        if isinstance(maker, async_sessionmaker)
    ]
    if not makers:
        raise LookupError("db_client: the app has no session maker yet (not started)")
    saved: list[tuple[async_sessionmaker[Any], dict[str, Any]]] = []
    for maker in makers:
        saved.append((maker, {key: maker.kw[key] for key in _KEYS if key in maker.kw}))
        maker.configure(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield
    finally:
        for maker, settings in saved:
            for key in _KEYS:
                maker.kw.pop(key, None)
            maker.configure(**settings)
