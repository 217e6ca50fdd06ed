"""How long checkouts wait on a saturated pool: SQLAlchemy's queue against ours.

``TASKS`` tasks loop over ``engine.connect()`` + a 5 ms statement on a pool of 8 + 4
connections, so most checkouts wait. The same load runs on a plain
``create_async_engine`` (``AsyncAdaptedQueuePool``) and on ours (``LoopBoundPool`` with
``FairQueue``), in alternating rounds within one run. Prints a Markdown table: checkout
wait p50 / p99 / max, and checkouts per second.

    .venv/bin/python -m benchmarks.checkout_wait [URL] [--rounds 3] [--tasks 32] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from benchmarks.harness import POSTGRES
from litestar_bento_db import DatabaseConfig, create_async_engine_from_config

POOL = {"pool_size": 8, "max_overflow": 4, "pool_timeout": 30.0}
HOLD = text("SELECT pg_sleep(0.005)")

ENGINES: dict[str, Callable[[str], AsyncEngine]] = {
    "SQLAlchemy's AsyncAdaptedQueuePool": lambda url: create_async_engine(url, **POOL),
    "ours (FairQueue)": lambda url: create_async_engine_from_config(
        DatabaseConfig(url=url, **POOL)  # type: ignore[arg-type]
    ),
}


async def _round(engine: AsyncEngine, tasks: int, seconds: float) -> tuple[list[float], float]:
    waits: list[float] = []
    stop = time.monotonic() + seconds

    async def task() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            async with engine.connect() as connection:
                waits.append(time.perf_counter() - started)
                await connection.execute(HOLD)

    began = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(tasks)))
    return waits, len(waits) / (time.perf_counter() - began)


async def main(url: str, rounds: int, tasks: int, seconds: float) -> None:
    figures: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in ENGINES}
    for _ in range(rounds):
        for name, make in ENGINES.items():
            engine = make(url)
            try:
                await _round(engine, tasks, 1.0)  # open the connections, warm the caches
                waits, rate = await _round(engine, tasks, seconds)
            finally:
                await engine.dispose()
            cuts = statistics.quantiles(waits, n=100)
            figures[name].append((cuts[49], cuts[98], max(waits), rate))
    print(f"{tasks} tasks, pool 8 + 4, 5 ms per checkout, {rounds} rounds of {seconds:g} s")
    print(f"({platform.python_version()}; medians of the rounds)\n")
    print("| pool queue | wait p50 (ms) | wait p99 (ms) | wait max (ms) | checkouts/s |")
    print("|---|---|---|---|---|")
    for name, rows in figures.items():
        p50, p99, most, rate = (statistics.median(column) for column in zip(*rows, strict=True))
        print(f"| {name} | {p50 * 1000:.1f} | {p99 * 1000:.1f} | {most * 1000:.1f} | {rate:.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default=POSTGRES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.url, arguments.rounds, arguments.tasks, arguments.seconds))
