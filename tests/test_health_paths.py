"""The health routes never collide silently with the app's own routes.

An app that serves one of the health paths itself (a handler, a controller, a router)
gets a ConfigError at construction naming ``HealthConfig(path=...)``, instead of
Litestar's "Handler already registered for path '/health' and http method OPTIONS";
with another path both answer.
"""

from __future__ import annotations

import pytest
from litestar import Controller, Litestar, Router, get
from litestar.testing import TestClient

from litestar_bento_db import ConfigError, DatabaseConfig, DatabasePlugin, HealthConfig

pytestmark = pytest.mark.usefixtures("clean_env")

MEMORY = DatabaseConfig(url="sqlite+aiosqlite:///:memory:")


@get("/health", sync_to_thread=False)
def app_health() -> str:
    return "the app's own"


class Probes(Controller):
    path = "/health"

    @get("/readiness", sync_to_thread=False)
    def ready(self) -> str:
        return "the app's own"


@get("/health", sync_to_thread=False)
def nested() -> str:
    return "the app's own"


@pytest.mark.parametrize(
    ("handlers", "taken"),
    [
        ([app_health], "/health"),
        ([Probes], "/health/readiness"),
        ([Router(path="/", route_handlers=[nested])], "/health"),
    ],
    ids=["handler", "controller", "router"],
)
def test_a_taken_health_path_is_a_clear_error(handlers: list[object], taken: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Litestar(route_handlers=handlers, plugins=[DatabasePlugin(MEMORY)])  # type: ignore[arg-type]
    message = str(caught.value)
    assert f"the app already serves {taken}" in message
    assert "HealthConfig(path=" in message


def test_routes_elsewhere_do_not_count() -> None:
    api = Router(path="/api", route_handlers=[nested])  # /api/health
    Litestar(route_handlers=[api], plugins=[DatabasePlugin(MEMORY)])


def test_with_another_path_both_answer() -> None:
    plugin = DatabasePlugin(MEMORY, health=HealthConfig(path="/db/health"))
    app = Litestar(route_handlers=[app_health], plugins=[plugin])
    with TestClient(app) as client:
        assert client.get("/health").text == "the app's own"
        assert client.get("/db/health/readiness").status_code == 200
