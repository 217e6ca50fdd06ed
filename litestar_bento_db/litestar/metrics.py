"""Metrics in a Litestar app: the Prometheus route, OpenTelemetry, request names for leaks.

One registry, one route: the database collector goes into ``prometheus_client``'s
default registry, which Litestar's own ``PrometheusController`` serves. An app that
already mounts one gets the database metrics there; otherwise ``metrics_path`` mounts a
``PrometheusController`` at that path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from litestar.types import ASGIApp, Receive, Scope, Send

from litestar_bento_db._values import ConfigError
from litestar_bento_db.metrics.leaks import CURRENT_ROUTE

if TYPE_CHECKING:
    from litestar.config.app import AppConfig

__all__ = ["add_metrics", "name_requests"]


def _prometheus_controller() -> type[Any] | None:
    try:
        from litestar.plugins.prometheus import PrometheusController
    except ImportError:  # prometheus-client is not installed
        return None
    return PrometheusController


def _mounts(handlers: Iterable[Any], controller: type[Any]) -> bool:
    """True when ``handlers`` (classes, routers, route handlers) include ``controller``."""
    for handler in handlers:
        if isinstance(handler, type) and issubclass(handler, controller):
            return True
        if isinstance(getattr(getattr(handler, "fn", None), "__self__", None), controller):
            return True
        routes = getattr(handler, "routes", None)
        if routes is not None and _mounts(
            (h for route in routes for h in getattr(route, "route_handlers", ())), controller
        ):
            return True
    return False


def add_metrics(app_config: AppConfig, path: str | None, *, enabled: bool) -> None:
    """Export the database metrics from this app.

    Args:
        app_config: The app being configured.
        path: Where to mount the Prometheus route when the app has none; None: no route
            of ours (an app's own ``PrometheusController`` still serves the metrics).
        enabled: Whether metrics are collected at all (``DatabaseConfig.metrics``).

    Raises:
        ConfigError: ``path`` is set but ``prometheus-client`` is not installed.
    """
    if not enabled:
        return
    from litestar_bento_db.metrics.otel import install_opentelemetry

    install_opentelemetry()  # a no-op without opentelemetry-api
    controller = _prometheus_controller()
    if controller is None:
        if path is not None:
            raise ConfigError(
                "metrics_path: serving Prometheus metrics needs prometheus-client "
                "(pip install 'litestar-bento-db[prometheus]')"
            )
        return
    mounted = _mounts(app_config.route_handlers, controller)
    if path is None and not mounted:
        return
    from litestar_bento_db.metrics.prometheus import register_collector

    register_collector()
    if not mounted and path is not None:
        app_config.route_handlers.append(
            type("DatabaseMetricsController", (controller,), {"path": path})
        )


def name_requests(app: ASGIApp) -> ASGIApp:
    """ASGI middleware naming the request for leak reports (only when leak detection is on)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        paths = sorted(getattr(handler, "paths", ()) or [scope["path"]])
        method = scope.get("method", scope["type"])
        CURRENT_ROUTE.set(f"{method} {paths[0]} ({getattr(handler, 'handler_name', '?')})")
        await app(scope, receive, send)

    return middleware
