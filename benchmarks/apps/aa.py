"""advanced-alchemy's SQLAlchemyPlugin with its autocommit handler."""

from __future__ import annotations

from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemyPlugin,
)
from litestar import Litestar

from benchmarks.apps.common import HANDLERS, POOL, URL

config = SQLAlchemyAsyncConfig(
    connection_string=URL,
    engine_config=EngineConfig(**POOL),  # type: ignore[arg-type]
    session_config=AsyncSessionConfig(expire_on_commit=False),
    before_send_handler="autocommit",
    create_all=False,
)
app = Litestar(route_handlers=HANDLERS, plugins=[SQLAlchemyPlugin(config=config)])
