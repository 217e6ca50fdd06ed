"""Health routes: liveness, readiness and overall status as ``application/health+json``.

``{path}/liveness`` never touches the database. ``{path}/readiness`` answers 503 with
``Retry-After`` while starting, draining, when the database does not answer a bounded
ping, or when the primary's URL reaches a read-only server (a standby after a failover;
``expect_writable``). ``{path}`` gives the overall status, with latency, pool figures
and whether the server is writable when details are enabled. No URL, host, user or
password is ever shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from litestar import Controller, Response, Router, get
from litestar.handlers import BaseRouteHandler
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from litestar.utils import join_paths

from litestar_bento_db.litestar.runtime import DatabaseRuntime, Phase

__all__ = ["HEALTH_MEDIA_TYPE", "create_health_router"]

HEALTH_MEDIA_TYPE = "application/health+json"


def _response(status: str, body: dict[str, Any], retry_after: int) -> Response[dict[str, Any]]:
    ok = status != "fail"
    headers = {"Cache-Control": "no-store"}
    if not ok:
        headers["Retry-After"] = str(retry_after)
    return Response(
        {"status": status, **body},
        status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE,
        media_type=HEALTH_MEDIA_TYPE,
        headers=headers,
    )


async def _readiness(runtime: DatabaseRuntime) -> tuple[str, dict[str, Any]]:
    if runtime.phase is not Phase.READY:
        output = runtime.phase.value
        if runtime.phase is Phase.STARTING and runtime.last_error:
            output = f"starting: database unavailable ({runtime.last_error})"
        return "fail", {"output": output}
    probe = await runtime.probe()
    if not probe.ok:
        return "fail", {"output": f"database unavailable ({probe.error})"}
    if probe.read_only:
        return "fail", {"output": "primary is read-only"}
    return "pass", {}


def _route_paths(route_handlers: Iterable[Any], prefix: str = "/") -> Iterator[str]:
    """The paths the app's handlers, controllers and routers will serve.

    Read from what each declares before Litestar registers them; nothing is changed.
    """
    for value in route_handlers:
        if isinstance(value, Router):
            yield from (join_paths([prefix, route.path]) for route in value.routes)
        elif isinstance(value, type) and issubclass(value, Controller):
            base = join_paths([prefix, getattr(value, "path", "") or "/"])  # a class attribute
            handlers = (getattr(value, name, None) for name in dir(value))
            for handler in handlers:
                if isinstance(handler, BaseRouteHandler):
                    yield from (join_paths([base, path]) for path in handler.paths)
        elif isinstance(value, BaseRouteHandler):
            yield from (join_paths([prefix, path]) for path in value.paths)


def health_paths(path: str) -> tuple[str, ...]:
    """The paths of the health routes under ``path``."""
    return tuple(join_paths([path, tail]) for tail in ("", "liveness", "readiness"))


def taken_health_path(path: str, route_handlers: Iterable[Any]) -> str | None:
    """The first health route path the app's own routes already serve, if any."""
    ours = set(health_paths(path))
    return next((taken for taken in _route_paths(route_handlers) if taken in ours), None)


def create_health_router(runtime: DatabaseRuntime) -> Router:
    """Build the health routes for ``runtime`` under its configured path."""
    health = runtime.config.health
    assert health.path is not None
    opt = {"exclude_from_auth": health.exclude_from_auth}
    retry_after = health.retry_after

    @get("/liveness", include_in_schema=health.include_in_schema, opt=opt, sync_to_thread=False)
    def liveness() -> Response[dict[str, Any]]:
        """The process answers; the database is not consulted."""
        return _response("pass", {}, retry_after)

    @get("/readiness", include_in_schema=health.include_in_schema, opt=opt)
    async def readiness() -> Response[dict[str, Any]]:
        """Ready for traffic: started, not draining, database answering."""
        status, body = await _readiness(runtime)
        return _response(status, body, retry_after)

    @get(
        "/",
        include_in_schema=health.include_in_schema,
        opt=opt,
        guards=list(health.guards),
    )
    async def overall() -> Response[dict[str, Any]]:
        """Overall status; latency and pool figures when details are enabled.

        ``warn`` (still 200) when a read replica is out of rotation.
        """
        status, body = await _readiness(runtime)
        replicas = runtime.replicas
        if status == "pass" and replicas is not None and not replicas.healthy:
            status = "warn"
        if health.details:
            probe = runtime.last_probe
            now = time.time()
            checks: dict[str, list[dict[str, Any]]] = {
                "database:responseTime": [
                    {
                        "componentType": "datastore",
                        "observedValue": probe.latency_ms if probe else None,
                        "observedUnit": "ms",
                        "status": status,
                    }
                ],
                "database:writable": [
                    {
                        "componentType": "datastore",
                        "observedValue": None
                        if probe is None or probe.read_only is None
                        else not probe.read_only,
                        "status": status,
                    }
                ],
                "database:connections": [
                    {"componentType": "datastore", "status": status, **runtime.pool_figures()}
                ],
            }
            if replicas is not None:
                checks["database:replicas"] = [
                    {"componentType": "datastore", "observedUnit": "s", **replica}
                    for replica in replicas.status()
                ]
            body = {**body, "phase": runtime.phase.value, "time": now, "checks": checks}
        return _response(status, body, retry_after)

    return Router(path=health.path, route_handlers=[liveness, readiness, overall])
