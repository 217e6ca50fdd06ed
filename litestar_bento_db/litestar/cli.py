"""``litestar bento-db``: connectivity check and database info for deploy scripts."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

import click

from litestar_bento_db.lifecycle import get_database_info

if TYPE_CHECKING:
    from litestar_bento_db.engines import DialectSettings

__all__ = ["add_cli_commands"]

_TIMEOUT = click.option(
    "--timeout", default=5.0, show_default=True, help="Seconds to wait for an answer."
)


async def _info(settings: DialectSettings, timeout: float) -> dict[str, Any]:
    # its own engine, in this command's own event loop
    engine = settings.create_engine()
    try:
        info = await get_database_info(engine, timeout=timeout)
    finally:
        await engine.dispose()
    config = settings.config.safe_dict()
    info["url"] = config.pop("url")
    info["config"] = config
    return info


def add_cli_commands(cli: click.Group, settings: DialectSettings) -> None:
    """Add the ``bento-db`` group (``check``, ``info``) to Litestar's CLI.

    Args:
        cli: The root ``litestar`` command group.
        settings: The dialect settings of the app's database.
    """

    @cli.group(name="bento-db")
    def bento_db() -> None:
        """Check the database connection and show its settings (password masked)."""

    @bento_db.command(name="check")
    @_TIMEOUT
    def check(timeout: float) -> None:
        """Exit 0 when the database answers, 1 (with the reason) when it does not."""
        info = asyncio.run(_info(settings, timeout))
        if info["reachable"]:
            answered = f"{info['database_type']} answered in {info['latency_ms']} ms"
            click.echo(f"ok: {answered} ({info['url']})")
            return
        click.echo(
            f"error: database not reachable within {timeout:g} s: {info['error']} ({info['url']})",
            err=True,
        )
        sys.exit(1)

    @bento_db.command(name="info")
    @_TIMEOUT
    def info(timeout: float) -> None:
        """Print the database and pool settings as JSON (no password)."""
        click.echo(json.dumps(asyncio.run(_info(settings, timeout)), indent=2, default=str))
