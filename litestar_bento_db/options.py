"""Options of the Litestar plugin: health routes, startup, shutdown, transactions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from litestar.types import Guard
from sqlalchemy import MetaData

from litestar_bento_db.config import DatabaseConfig
from litestar_bento_db.draining import DrainingMode

__all__ = ["HealthConfig", "PluginConfig"]


@dataclass(frozen=True)
class HealthConfig:
    """Health routes: ``{path}`` (overall), ``{path}/liveness``, ``{path}/readiness``."""

    path: str | None = "/health"
    """Base path of the health routes; ``None`` mounts none."""
    readiness_timeout: float = 2.0
    """Seconds the readiness ping may take before the database counts as down."""
    cache_ttl: float = 1.0
    """Seconds a ping result answers further probes (one round trip per interval at most)."""
    retry_after: int = 5
    """``Retry-After`` seconds sent with a 503."""
    details: bool = False
    """Include latency and pool figures in the bare path's answer."""
    guards: Sequence[Guard] = ()
    """Guards for the bare path (the one that can show details); liveness and readiness
    stay open for the orchestrator."""
    include_in_schema: bool = False
    """List the health routes in the OpenAPI schema."""
    exclude_from_auth: bool = True
    """Mark the routes ``exclude_from_auth`` so authentication middleware lets probes in."""

    def __post_init__(self) -> None:
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f"health path must start with '/', got {self.path!r}")
        if self.readiness_timeout <= 0 or self.cache_ttl < 0:
            raise ValueError("readiness_timeout must be > 0 and cache_ttl >= 0")


@dataclass(frozen=True)
class PluginConfig:
    """Everything :class:`~litestar_bento_db.DatabasePlugin` needs.

    The database settings come from ``database`` (by default ``DatabaseConfig()``, that
    is the ``DB_*`` environment).
    """

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    """Connection and pool settings."""
    health: HealthConfig = field(default_factory=HealthConfig)
    """Health routes."""
    fail_fast: bool = False
    """Raise at startup when the database cannot be reached, instead of starting
    unready and connecting in the background."""
    startup_retry_max_delay: float = 5.0
    """Cap of the backoff between background connection attempts, in seconds."""
    drain_mode: DrainingMode = DrainingMode.GRACEFUL
    """How connections are drained at shutdown."""
    drain_timeout: float = 30.0
    """Seconds the shutdown drain may wait for connections to come back."""
    commit_on_redirect: bool = False
    """Commit on 3xx responses too (2xx always commit; anything else rolls back)."""
    metadata: MetaData | None = None
    """Tables to create (missing ones only) once the database is reachable."""
    session_dependency_key: str = "db_session"
    """Name under which handlers receive the ``AsyncSession``."""
    engine_dependency_key: str = "db_engine"
    """Name under which handlers receive the ``AsyncEngine``."""
    session_factory_dependency_key: str = "db_session_factory"
    """Name under which handlers receive the session factory (``async_sessionmaker``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "drain_mode", DrainingMode(self.drain_mode))
        if self.drain_timeout < 0 or self.startup_retry_max_delay <= 0:
            raise ValueError("drain_timeout must be >= 0 and startup_retry_max_delay > 0")
