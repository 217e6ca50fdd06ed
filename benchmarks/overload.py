"""Overload: a database that cannot keep up, far more clients than connections.

Each app (the hand-written one, advanced-alchemy's plugin, ours) runs with a pool of
5 + 5 connections and ``pool_timeout=2``; every request holds its connection 0.2 s with
a statement (``GET /slow``: ``pg_sleep(0.2)``), so the apps can serve about 50 requests
a second. Clients arrive at 100 a second for 10 s (open loop: a request is sent on time
whatever the answers). Reported per app: the requests answered 200 and their latency
(p50, p99), the 503s and how long each took, anything else. Apps in alternating rounds.

    .venv/bin/python -m benchmarks.overload [--rounds 2] [--rate 100] [--seconds 10]
    .venv/bin/python -m benchmarks.run_all --only overload   # into RESULTS.md, with a chart
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import APPS, POSTGRES, load, prepare_tables, serving

POOL_ENV = {"BENCH_POOL_SIZE": "5", "BENCH_MAX_OVERFLOW": "5", "BENCH_POOL_TIMEOUT": "2"}
HOLD = 0.2
#: (key, app, its settings beyond POOL_ENV): ours also with the wait it accepts lowered
COMPARED: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("baseline", "baseline", {}),
    ("aa", "aa", {}),
    ("ours", "ours", {}),
    ("ours, pool_timeout=0.5", "ours", {"BENCH_POOL_TIMEOUT": "0.5"}),
)


@dataclass
class Figures:
    """One app's answers in one round."""

    app: str
    sent: int
    ok: int
    ok_p50_s: float
    ok_p99_s: float
    unavailable: int
    unavailable_at_once: int  # answered within 50 ms
    unavailable_p50_s: float
    unavailable_p99_s: float
    other: int
    failed_p50_s: float  # every answer but a 200 (the others' pool timeouts are 500s)
    failed_p99_s: float


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _load(base: str, rate: float, seconds: float) -> list[tuple[int, float]]:
    """Requests at ``rate`` a second for ``seconds`` s: (status, seconds taken) each."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        for _ in range(20):  # warm: connections open, the hold time seen
            await client.get("/slow", params={"seconds": HOLD})

        async def one() -> tuple[int, float]:
            started = time.perf_counter()
            try:
                status = (await client.get("/slow", params={"seconds": HOLD})).status_code
            except httpx.HTTPError:
                status = 0
            return status, time.perf_counter() - started

        loop = asyncio.get_running_loop()
        start, tasks = loop.time(), []
        for i in range(round(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            tasks.append(asyncio.ensure_future(one()))
        return list(await asyncio.gather(*tasks))


def _figures(app: str, answers: list[tuple[int, float]]) -> Figures:
    ok = [took for status, took in answers if status == 200]
    unavailable = [took for status, took in answers if status == 503]
    failed = [took for status, took in answers if status != 200]
    return Figures(
        app=app,
        sent=len(answers),
        ok=len(ok),
        ok_p50_s=round(_percentile(ok, 0.5), 3),
        ok_p99_s=round(_percentile(ok, 0.99), 3),
        unavailable=len(unavailable),
        unavailable_at_once=sum(took < 0.05 for took in unavailable),
        unavailable_p50_s=round(_percentile(unavailable, 0.5), 3),
        unavailable_p99_s=round(_percentile(unavailable, 0.99), 3),
        other=len(answers) - len(ok) - len(unavailable),
        failed_p50_s=round(_percentile(failed, 0.5), 3),
        failed_p99_s=round(_percentile(failed, 0.99), 3),
    )


def _median_figures(rounds: list[Figures]) -> dict[str, Any]:
    numbers = [asdict(r) for r in rounds]
    return {
        key: (
            numbers[0][key]
            if key == "app"
            else round(statistics.median(n[key] for n in numbers), 3)
        )
        for key in numbers[0]
    }


def _chart(table: list[dict[str, Any]], path: Path) -> bool:
    try:  # through load(): the bench extra may be missing where mypy runs
        matplotlib = load("matplotlib")
    except ImportError:
        return False
    matplotlib.use("Agg")
    plt = load("matplotlib.pyplot")

    labels = [row["app"] for row in table]
    series = [
        ("200: p50", "ok_p50_s"),
        ("200: p99", "ok_p99_s"),
        ("not 200: p50", "failed_p50_s"),
        ("not 200: p99", "failed_p99_s"),
    ]
    figure, axis = plt.subplots(figsize=(8, 4))
    width = 0.2
    for i, (name, key) in enumerate(series):
        positions = [x + (i - 1.5) * width for x in range(len(labels))]
        axis.bar(positions, [row[key] for row in table], width, label=name)
    axis.set_xticks(range(len(labels)), labels)
    axis.set_ylabel("seconds to the answer")
    axis.set_title("Overload: 100 requests/s for 10 s, capacity about 50/s (pool 5+5)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


async def _prepare() -> None:
    await prepare_tables()


def run(rounds: int, rate: float, seconds: float, chart: Path | None) -> dict[str, Any]:
    """Measure; the figures (medians over ``rounds``) and a markdown table; ``chart``
    drawn when given (and matplotlib is there)."""
    asyncio.run(_prepare())
    by_key = {app.key: app for app in APPS}
    apps = [
        replace(by_key[app], key=key, env={**by_key[app].env, **POOL_ENV, **env})
        for key, app, env in COMPARED
    ]
    measured: dict[str, list[Figures]] = {app.key: [] for app in apps}
    for round_ in range(rounds):
        for app in apps if round_ % 2 == 0 else reversed(apps):
            with serving(app, POSTGRES) as server:
                answers = asyncio.run(_load(server.base, rate, seconds))
            measured[app.key].append(_figures(app.key, answers))
    table = [_median_figures(figures) for figures in measured.values()]
    lines = [
        f"Pool 5 + 5, `pool_timeout=2`, each request holding its connection {HOLD} s "
        f"(`pg_sleep`): capacity about 50 requests/s. Clients arrive at {rate:g}/s for "
        f"{seconds:g} s (open loop), after 20 warm-up requests; median of {rounds} "
        "alternating rounds (`benchmarks/overload.py`).",
        "",
        "| app | sent | 200 | 200: p50 / p99 (s) | 503 | of which within 50 ms "
        "| other (500) | not 200: p50 / p99 (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table:
        lines.append(
            f"| {row['app']} | {row['sent']:g} | {row['ok']:g} | {row['ok_p50_s']:.2f} / "
            f"{row['ok_p99_s']:.2f} | {row['unavailable']:g} | {row['unavailable_at_once']:g} | "
            f"{row['other']:g} | {row['failed_p50_s']:.3f} / {row['failed_p99_s']:.3f} |"
        )
    if chart is not None and _chart(table, chart):
        lines += ["", f"![overload](results/{chart.name})"]
    return {"figures": table, "markdown": "\n".join(lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(run(args.rounds, args.rate, args.seconds, chart=None)["markdown"])


if __name__ == "__main__":
    main()
