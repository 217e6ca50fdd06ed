"""advanced-alchemy's Litestar config, run on this package's engine, sessions and lifecycle.

The plugin composes advanced-alchemy: its ``SQLAlchemyPlugin`` serves the app with a
``SQLAlchemyAsyncConfig`` whose engine, session maker, request sessions and lifespan are
this package's. That config is one the plugin builds, or the app's own object
(:func:`take_over`): the app's code that holds it (``provide_session``,
``get_session()``, services, the ``database`` CLI) then reaches the same engine and
sessions as the requests.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

from advanced_alchemy.extensions.litestar import (
    SQLAlchemyAsyncConfig,
    SQLAlchemyInitPlugin,
    SQLAlchemyPlugin,
)
from litestar.datastructures import State
from litestar.types import Scope
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from litestar_bento_db.litestar.file_objects import track_files_only_when_stored
from litestar_bento_db.litestar.runtime import DatabaseRuntime
from litestar_bento_db.litestar.transaction import refuse_after_response, request_session
from litestar_bento_db.replicas import primary_only, route_reads, stick_to_primary

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = ["BentoAlchemyConfig", "other_configs", "take_over"]

T = TypeVar("T")
_READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BentoAlchemyConfig(SQLAlchemyAsyncConfig):
    """An advanced-alchemy config taken over by the plugin (see :func:`take_over`).

    Its lifespan disposes the engine when it exits, which happens before Litestar's
    ``on_shutdown`` hooks; running the runtime's drain inside it puts the drain first.
    """

    runtime: DatabaseRuntime
    primary_maker: async_sessionmaker[AsyncSession] | None
    """With replicas: the session maker whose sessions use the primary only."""

    def may_write(self, scope: Scope) -> bool:
        """Whether, with replicas, ``scope``'s request must use the primary throughout."""
        return self.primary_maker is not None and scope.get("method") not in _READ_ONLY_METHODS

    def get_engine(self) -> AsyncEngine:
        """The runtime's engine (created on first use)."""
        if self.engine_instance is None:
            self.engine_instance = self.runtime.create_engine()
        return self.engine_instance

    def provide_session(self, state: State, scope: Scope) -> AsyncSession:
        """The request's session, created on first use and kept for the before-send hook.

        With read replicas, a request that may write (any method but GET, HEAD and
        OPTIONS) uses the primary throughout: its reads see its own writes and no
        read-modify-write works from a lagging copy.
        """
        factory: async_sessionmaker[AsyncSession] = state[self.session_maker_app_state_key]
        session = request_session(scope, self.session_scope_key, factory)
        if self.may_write(scope):
            stick_to_primary(session)
        return session

    def create_session_maker(self) -> Callable[[], AsyncSession]:
        """advanced-alchemy's session maker, made for requests.

        Its sessions run advanced-alchemy's file-object tracking only in flushes that
        can store files, refuse work after the response started and, with replicas,
        route reads.
        """
        fresh = self.session_maker is None
        maker = super().create_session_maker()
        if fresh and isinstance(maker, async_sessionmaker):
            track_files_only_when_stored(maker)
            replicas = self.runtime.replicas
            if replicas is not None:
                route_reads(maker, replicas)
            refuse_after_response(maker)
            if replicas is not None:
                self.primary_maker = primary_only(maker)
        return maker

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncGenerator[None, None]:
        """advanced-alchemy's lifespan (app state; engine disposed last) around the runtime's."""
        async with super().lifespan(app):
            await self.runtime.start()
            try:
                yield
            finally:
                await self.runtime.stop()  # then super() disposes the engine


_classes: dict[type[SQLAlchemyAsyncConfig], type[BentoAlchemyConfig]] = {
    SQLAlchemyAsyncConfig: BentoAlchemyConfig
}
_taken_over: set[type[SQLAlchemyAsyncConfig]] = {BentoAlchemyConfig}


def _taken_over_class(cls: type[SQLAlchemyAsyncConfig]) -> type[BentoAlchemyConfig]:
    if issubclass(cls, BentoAlchemyConfig):
        return cls
    if cls not in _classes:  # an app's own subclass: ours first, then its methods
        _classes[cls] = type(cls.__name__, (BentoAlchemyConfig, cls), {})
        _taken_over.add(_classes[cls])
    return _classes[cls]


def take_over(config: SQLAlchemyAsyncConfig, runtime: DatabaseRuntime) -> BentoAlchemyConfig:
    """Make ``config`` (the same object) use ``runtime``'s engine, sessions and lifecycle.

    The object's class becomes a subclass of its own with :class:`BentoAlchemyConfig`'s
    methods first, so whatever holds the object (the app's guards, jobs, services, CLI)
    keeps working with it, on the plugin's engine. Its fields are left as they are.
    """
    config.__class__ = _taken_over_class(type(config))
    assert isinstance(config, BentoAlchemyConfig)
    config.runtime = runtime
    config.primary_maker = None
    return config


def _with_subclasses(cls: type[T]) -> list[type[T]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _with_subclasses(direct))]


def other_configs() -> list[SQLAlchemyAsyncConfig]:
    """The live advanced-alchemy Litestar configs of the process that no plugin serves.

    Neither taken over by a ``DatabasePlugin`` nor given to an advanced-alchemy plugin
    (of another app: one in this app is refused on its own). Found through the
    collector (the objects referring to a config class); garbage not yet collected is
    collected before answering that there is some.
    """
    classes = [cls for cls in _with_subclasses(SQLAlchemyAsyncConfig) if cls not in _taken_over]

    def unserved() -> list[SQLAlchemyAsyncConfig]:
        plugins = (*_with_subclasses(SQLAlchemyPlugin), *_with_subclasses(SQLAlchemyInitPlugin))
        found = gc.get_referrers(*plugins, *classes)  # one walk over the collector's objects
        served = {id(config) for one in found if type(one) in plugins for config in one.config}
        return [one for one in found if type(one) in classes and id(one) not in served]

    if not unserved():
        return []
    gc.collect()  # (nothing found above is still referenced here)
    return unserved()
