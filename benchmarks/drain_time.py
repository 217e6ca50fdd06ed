"""Drain time per mode against the longest in-flight transaction.

N transactions are in flight (each inserts nothing, holds its connection for a
staggered time, commits); the drain starts once all are running. Reports the drain's
``time_taken`` next to the longest remaining hold, median of several runs.

    .venv/bin/python benchmarks/drain_time.py [URL ...] [--runs 5] [-n 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from sqlalchemy import text

from litestar_bento_db import DatabaseConfig, create_engine_and_session_factory, drain_connections


async def one_run(url: str, n: int, mode: str) -> tuple[float, float, bool]:
    engine, factory = create_engine_and_session_factory(
        DatabaseConfig(url=url, pool_size=n, max_overflow=0)
    )
    holds = [0.2 + 0.5 * i / max(n - 1, 1) for i in range(n)]  # 0.2 s .. 0.7 s
    started: list[int] = []

    async def work(i: int) -> None:
        async with factory() as session, session.begin():
            await session.execute(text("SELECT 1"))
            started.append(i)
            await asyncio.sleep(holds[i])

    tasks = [asyncio.ensure_future(work(i)) for i in range(n)]
    while len(started) < n:
        await asyncio.sleep(0.005)
    began = time.monotonic()
    stats = await drain_connections(engine, timeout=10, mode=mode)
    await asyncio.gather(*tasks, return_exceptions=True)
    await engine.dispose()
    longest_left = max(holds) - (began - began)  # holds start together
    return stats["time_taken"], longest_left, stats["success"]


async def main(urls: list[str], runs: int, n: int) -> None:
    print(f"drain time, {n} transactions in flight (holds 0.2-0.7 s), median of {runs} runs\n")
    print("| database | mode | drain time (s) | longest transaction (s) | success |")
    print("|---|---|---|---|---|")
    for url in urls:
        name = DatabaseConfig(url=url).database_type
        for mode in ("graceful", "immediate", "force"):
            results = [await one_run(url, n, mode) for _ in range(runs)]
            taken = statistics.median(r[0] for r in results)
            longest = statistics.median(r[1] for r in results)
            ok = all(r[2] for r in results)
            print(f"| {name} | {mode} | {taken:.3f} | {longest:.3f} | {ok} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "urls",
        nargs="*",
        default=["postgresql://postgres@127.0.0.1/test", "mysql://root@127.0.0.1/test"],
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("-n", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.urls, args.runs, args.n))
