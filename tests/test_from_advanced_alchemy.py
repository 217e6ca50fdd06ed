"""The advanced-alchemy-style example app (examples/from_advanced_alchemy/library.py)
on advanced-alchemy's plugin and, swapped in one line, on ours: the same answers on
PostgreSQL, MariaDB and SQLite; then what ours adds (health, 503 when the database is
down)."""

from __future__ import annotations

import gc
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
from advanced_alchemy.extensions.litestar import EngineConfig, SQLAlchemyPlugin
from litestar import Litestar
from litestar.exceptions import LitestarDeprecationWarning
from litestar.testing import TestClient
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from litestar_bento_db import DatabaseConfig, create_async_engine_from_config
from tests.conftest import backend_url

with warnings.catch_warnings():
    # advanced-alchemy 1.10's service providers use what Litestar 2.23 deprecates (the
    # lowest versions); the example app's own code does not
    warnings.simplefilter("ignore", LitestarDeprecationWarning)
    from examples.from_advanced_alchemy.library import Volume, Writer, create_app

# advanced-alchemy 1.10's own get_session() calls what it deprecated in 1.9 (lowest versions)
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated function 'set_async_context':DeprecationWarning"
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def _drop_tables(url: str) -> None:
    engine = create_async_engine_from_config(DatabaseConfig(url=url, pooling=False))
    try:
        async with engine.begin() as connection:
            for table in (Volume.__tablename__, Writer.__tablename__):
                await connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
    finally:
        await engine.dispose()


def _without_leaks(app: Litestar) -> Litestar:
    """advanced-alchemy's app without a pool: its lifespan does not dispose its engine
    when another config of the process took its app-state keys (ours did)."""
    for plugin in app.plugins.init:
        if isinstance(plugin, SQLAlchemyPlugin):
            for config in plugin.config:
                config.engine_config = EngineConfig(poolclass=NullPool)
    return app


def _conversation(client: TestClient[Any]) -> list[tuple[int, Any]]:
    """Requests a client of the library API makes, and the answers, ids numbered."""
    answers: list[tuple[int, Any]] = []

    def call(method: str, path: str, **kwargs: Any) -> Any:
        response = client.request(method, path, **kwargs)
        body = response.json() if response.content else None
        answers.append((response.status_code, body))
        return body

    ursula = call("POST", "/writers", json={"name": "Ursula", "born": "1929-10-21"})
    terry = call("POST", "/writers", json={"name": "Terry"})
    call("GET", "/writers", params={"searchString": "URS", "currentPage": 1, "pageSize": 10})
    call("GET", "/writers", params={"currentPage": 1, "pageSize": 1, "orderBy": "name"})
    call("GET", f"/writers/{ursula['id']}")
    call("GET", "/writers/00000000-0000-4000-8000-000000000000")  # not there: 404
    call("PATCH", f"/writers/{ursula['id']}", json={"name": "Ursula K."})
    call("POST", "/volumes", json={"title": "The Dispossessed", "writer_id": ursula["id"]})
    call("POST", "/volumes", json={"title": "Mort", "writer_id": terry["id"]})
    call("POST", "/writers", json={"born": "1948-04-28"})  # no name: 400
    call("GET", "/volumes")
    gone = call("POST", "/writers", json={"name": "Gone"})
    call("DELETE", f"/writers/{gone['id']}")  # 204
    call("GET", "/writers", params={"currentPage": 1, "pageSize": 10, "orderBy": "name"})
    return answers


def _numbered(answers: list[tuple[int, Any]]) -> str:
    """The answers as text, each id replaced by its order of first appearance."""
    ids: dict[str, str] = {}
    dumped = repr(answers)
    return _UUID.sub(lambda found: ids.setdefault(found.group(), f"<id{len(ids)}>"), dumped)


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite_file"])
async def test_the_same_answers_on_either_plugin(backend: str, tmp_path: Path) -> None:
    url = backend_url(backend, tmp_path)
    conversations = {}
    for plugin in ("advanced-alchemy", "bento"):
        await _drop_tables(url)  # each from nothing: create_all makes the tables
        app = _without_leaks(create_app(url, plugin))
        with TestClient(app) as client:
            conversations[plugin] = _numbered(_conversation(client))
            if plugin == "bento":
                assert client.get("/health/readiness").status_code == 200
        del app, client
        gc.collect()  # the advanced-alchemy app's config is not held beside ours
    assert conversations["bento"] == conversations["advanced-alchemy"]
    statuses = re.findall(r"\((\d{3}), ", conversations["bento"])
    assert statuses[:10] == ["201", "201", "200", "200", "200", "404", "200", "201", "201", "400"]
    assert statuses[10:] == ["200", "201", "204", "200"]
    assert "'total': 1" in conversations["bento"]
    assert "'total': 2" in conversations["bento"]
    assert "Ursula K." in conversations["bento"]


def test_a_database_down_is_503_on_ours_where_advanced_alchemys_does_not_start() -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:1/test"
    app = _without_leaks(create_app(url, "advanced-alchemy"))
    # its create_all at startup: the connection refused, the app does not start
    refused = r"Connect call failed|unhandled errors"
    with pytest.raises(BaseException, match=refused), TestClient(app):
        pass
    del app
    gc.collect()
    with TestClient(create_app(url, "bento")) as client:
        response = client.get("/writers")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert client.get("/health/liveness").status_code == 200
        assert client.get("/health/readiness").status_code == 503
