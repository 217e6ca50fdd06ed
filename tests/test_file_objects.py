"""advanced-alchemy's file objects through the plugin, and no file tracking without them.

The plugin switches advanced-alchemy's file-object listener on only in flushes with an
object whose class has a ``StoredObject`` column (``litestar/file_objects.py``): files
must still be saved on commit (and not on rollback), and a flush of plain objects must
make no tracker (advanced-alchemy would start a task after the commit to save nothing).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from advanced_alchemy.types.file_object import (
    FileObject,
    FileObjectSessionTracker,
    StoredObject,
    storages,
)
from advanced_alchemy.types.file_object.backends.fsspec import FSSpecBackend
from litestar import Litestar, post
from litestar.params import FromPath, FromQuery
from litestar.testing import TestClient
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from litestar_bento_db import DatabaseConfig, DatabasePlugin, DbSession
from litestar_bento_db.litestar.file_objects import SWITCH
from tests.conftest import backend_url

BACKEND = "bento-test-memory"


class Base(DeclarativeBase):
    pass


class Plain(Base):
    __tablename__ = "bento_fo_plain"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(40))


class Document(Base):
    __tablename__ = "bento_fo_document"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    file: Mapped[FileObject] = mapped_column(StoredObject(backend=BACKEND))


def _tracking(db_session: DbSession) -> bool:
    return any(isinstance(v, FileObjectSessionTracker) for v in db_session.info.values())


@post("/plain/{item_id:int}", status_code=201)
async def add_plain(db_session: DbSession, item_id: FromPath[int]) -> dict[str, Any]:
    db_session.add(Plain(id=item_id, name="plain"))
    await db_session.flush()
    return {"tracking": _tracking(db_session), "switch": db_session.info[SWITCH]}


@post("/documents/{item_id:int}", status_code=201)
async def add_document(
    db_session: DbSession, item_id: FromPath[int], fail: FromQuery[bool] = False
) -> dict[str, Any]:
    db_session.add(Plain(id=item_id, name="first flush: nothing to store"))
    await db_session.flush()
    name = f"doc-{item_id}.txt"
    db_session.add(Document(id=item_id, file=FileObject(BACKEND, name, content=b"hello")))
    await db_session.flush()
    tracking = _tracking(db_session)
    db_session.add(Plain(id=item_id + 1000, name="later flush: nothing to store"))
    await db_session.flush()
    if fail:
        raise ValueError("roll back")
    return {"tracking": tracking, "switch": db_session.info[SWITCH]}


@post("/documents/{item_id:int}/replace", status_code=201)
async def replace_document(db_session: DbSession, item_id: FromPath[int]) -> dict[str, Any]:
    document = (await db_session.execute(select(Document).filter_by(id=item_id))).scalar_one()
    document.file = FileObject(BACKEND, f"doc-{item_id}-v2.txt", content=b"again")
    await db_session.flush()  # a changed object only: session.dirty
    return {"tracking": _tracking(db_session)}


@pytest.fixture
def memory() -> Iterator[Any]:
    filesystem = fsspec.filesystem("memory")
    backend = FSSpecBackend(fs=filesystem, key=BACKEND)
    storages.register_backend(backend)
    yield filesystem
    storages.unregister_backend(BACKEND)
    filesystem.rm("/", recursive=True)


@pytest.fixture(params=["sqlite_file", "postgresql"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient[Litestar]]:
    plugin = DatabasePlugin(DatabaseConfig(url=backend_url(request.param, tmp_path)))
    app = Litestar(route_handlers=[add_plain, add_document, replace_document], plugins=[plugin])
    with TestClient(app) as test_client:

        async def schema() -> None:
            assert plugin.runtime.engine is not None
            async with plugin.runtime.engine.begin() as connection:
                await connection.run_sync(Base.metadata.drop_all)
                await connection.run_sync(Base.metadata.create_all)

        test_client.blocking_portal.call(schema)
        yield test_client


def _saved(filesystem: Any, name: str) -> bytes | None:
    for _ in range(100):  # advanced-alchemy saves in a task started after the commit
        if filesystem.exists(name):
            return bytes(filesystem.cat(name))
        time.sleep(0.01)
    return None


def test_a_flush_of_plain_objects_tracks_no_files(
    client: TestClient[Litestar], memory: Any
) -> None:
    response = client.post("/plain/1")
    assert response.status_code == 201
    assert response.json() == {"tracking": False, "switch": False}


def test_files_are_saved_on_commit(client: TestClient[Litestar], memory: Any) -> None:
    response = client.post("/documents/1")
    assert response.status_code == 201
    # tracked in the flush that stored it; later plain flushes turn the switch off
    assert response.json() == {"tracking": True, "switch": False}
    assert _saved(memory, "doc-1.txt") == b"hello"

    replaced = client.post("/documents/1/replace")
    assert replaced.status_code == 201
    assert replaced.json() == {"tracking": True}
    assert _saved(memory, "doc-1-v2.txt") == b"again"


def test_files_are_not_saved_on_rollback(client: TestClient[Litestar], memory: Any) -> None:
    assert client.post("/documents/2?fail=true").status_code == 500
    assert _saved(memory, "doc-2.txt") is None
