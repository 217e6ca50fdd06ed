"""The Litestar integration: plugin, per-worker runtime, health routes, commit hook, CLI.

Everything here builds on the framework-free core (``litestar_bento_db.config``,
``engines``, ``pool``, ``session``, ``lifecycle``, ``resilience``, ``draining``).
"""

from __future__ import annotations

from litestar_bento_db.litestar.config import HealthConfig, PluginConfig
from litestar_bento_db.litestar.plugin import (
    DatabasePlugin,
    DbEngine,
    DbSession,
    DbSessionFactory,
)
from litestar_bento_db.litestar.runtime import DatabaseRuntime, DatabaseStartupError, Phase

__all__ = [
    "DatabasePlugin",
    "DatabaseRuntime",
    "DatabaseStartupError",
    "DbEngine",
    "DbSession",
    "DbSessionFactory",
    "HealthConfig",
    "Phase",
    "PluginConfig",
]
