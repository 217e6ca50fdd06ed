"""``litestar bento-db``: connectivity check and database info for deploy scripts."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any, cast

import click
from litestar.cli._utils import LitestarGroup

from litestar_bento_db.lifecycle import get_database_info

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = ["bento_db_group"]


async def _info(app: Litestar, timeout: float) -> dict[str, Any]:
    from litestar_bento_db.plugin import DatabasePlugin

    plugin = app.plugins.get(DatabasePlugin)
    engine = plugin.runtime.dialect.create_engine()
    try:
        info = await get_database_info(engine, timeout=timeout)
    finally:
        await engine.dispose()
    database = plugin.config.database
    info["url"] = database.safe_url
    info["config"] = {k: v for k, v in vars(database).items() if k != "url"}
    return info


@click.command(name="check")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for an answer.")
def check(app: Litestar, timeout: float) -> None:
    """Exit 0 when the database answers, 1 (with the reason) when it does not."""
    info = asyncio.run(_info(app, timeout))
    if info["reachable"]:
        answered = f"{info['database_type']} answered in {info['latency_ms']} ms"
        click.echo(f"ok: {answered} ({info['url']})")
        return
    click.echo(f"error: database not reachable within {timeout:g} s ({info['url']})", err=True)
    sys.exit(1)


@click.command(name="info")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for an answer.")
def info(app: Litestar, timeout: float) -> None:
    """Print the database and pool settings as JSON (no password)."""
    click.echo(json.dumps(asyncio.run(_info(app, timeout)), indent=2, default=str))


bento_db_group = LitestarGroup(
    name="bento-db",
    help="Check the database connection and show its settings (password masked).",
)
# LitestarGroup injects ``app``; its signature names rich-click's Command class
bento_db_group.add_command(cast("Any", check))
bento_db_group.add_command(cast("Any", info))
