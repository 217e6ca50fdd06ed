"""advanced-alchemy's file-object tracking, only in flushes that can store files.

advanced-alchemy's file-object listener (on in its config by default) makes a tracker in
every flush and, after each commit that followed a flush, starts an asyncio task to save
the tracker's files, whether or not any mapped class stores files. The listener added
here runs first in each flush and sets the session switch advanced-alchemy reads
(``info["enable_file_object_listener"]``): on when one of the flush's new, changed or
deleted objects has a ``StoredObject`` column (advanced-alchemy's own test), off
otherwise. A tracker made by an earlier flush of the transaction is still committed or
rolled back: advanced-alchemy's commit and rollback listeners do not read the switch.
"""

from __future__ import annotations

from itertools import chain
from typing import Any
from weakref import WeakKeyDictionary

from advanced_alchemy.types.file_object import StoredObject
from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Mapper, Session

from litestar_bento_db.litestar.transaction import sync_session_target

__all__ = ["SWITCH", "track_files_only_when_stored"]

SWITCH = "enable_file_object_listener"
"""The ``Session.info`` key advanced-alchemy's file-object listener reads."""

_STORES_FILES: WeakKeyDictionary[type, bool] = WeakKeyDictionary()


def _stores_files(cls: type) -> bool:
    known = _STORES_FILES.get(cls)
    if known is None:
        mapper: Mapper[Any] = inspect(cls)
        known = any(isinstance(column.type, StoredObject) for column in mapper.columns)
        _STORES_FILES[cls] = known
    return known


def _switch(session: Session, *_: Any) -> None:
    objects = chain(session.new, session.dirty, session.deleted)
    session.info[SWITCH] = any(_stores_files(type(obj)) for obj in objects)


def track_files_only_when_stored(maker: async_sessionmaker[Any]) -> None:
    """Run advanced-alchemy's file-object listener only in flushes that store files.

    Args:
        maker: A session factory whose ``sync_session_class`` (a class or a
            ``sessionmaker``, as advanced-alchemy configures it) carries the listeners.
    """
    event.listen(sync_session_target(maker), "before_flush", _switch, insert=True)
