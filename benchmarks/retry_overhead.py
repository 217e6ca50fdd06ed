"""Cost of ``retry_on_db_error`` on the success path, against a direct call.

The same real query (``SELECT 1`` through a session from a pooled engine) runs
directly and through the retry wrapper, in alternating rounds within one run, so both
see the same machine state. Prints a Markdown table with the ratio.

    .venv/bin/python benchmarks/retry_overhead.py [URL] [--rounds 7] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time

from sqlalchemy import text

from litestar_bento_db import DatabaseConfig, create_engine_and_session_factory
from litestar_bento_db.resilience import RetryConfig, retry_on_db_error


async def main(url: str, rounds: int, calls: int) -> None:
    engine, factory = create_engine_and_session_factory(DatabaseConfig(url=url))
    config = RetryConfig()

    async def unit_of_work() -> int:
        async with factory() as session:
            return int((await session.execute(text("SELECT 1"))).scalar_one())

    async def direct() -> None:
        for _ in range(calls):
            await unit_of_work()

    async def wrapped() -> None:
        for _ in range(calls):
            await retry_on_db_error(unit_of_work, config=config)

    await direct()  # warm the pool and caches
    times: dict[str, list[float]] = {"direct": [], "retry_on_db_error": []}
    for _ in range(rounds):
        for name, run in (("direct", direct), ("retry_on_db_error", wrapped)):
            started = time.perf_counter()
            await run()
            times[name].append((time.perf_counter() - started) / calls * 1e6)
    await engine.dispose()

    base = statistics.median(times["direct"])
    dialect = engine.dialect.name
    print(f"retry overhead on the success path: {dialect}, {calls} calls x {rounds} rounds")
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, Python {platform.python_version()}\n")
    print("| call | median µs/call | ratio to direct |")
    print("|---|---|---|")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"| {name} | {median:.1f} | {median / base:.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url", nargs="?", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.rounds, args.calls))
